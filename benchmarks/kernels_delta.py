"""Fast (chunked) delta-rule kernels vs our sequential references and flash-linear-attention's naive chunk forms.

    python -m benchmarks.kernels_delta [--lengths 1024 4096] [--reps 3] [--threads 2]

Per recurrence, at batch 4 and the layers' default widths at d_model 256 (delta_net: H4 K64 V64; gated_delta_net:
H4 K64 V128 (expand_v 2); rwkv: H4 K64 V64), fp32: forward (no grad) and forward+backward (gradients of every
input) time, tokens/s (B*L per second), the peak RSS growth of the first forward+backward (VmHWM reset through
/proc/self/clear_refs; "-" where unavailable; rough: memory freed earlier and still resident is reused without
growing RSS, so it reads low, often 0), and how many times faster ours is than each comparison, all
measured in the same run, after one warm-up call each. Times are the minimum over --reps runs (1 run for the
sequential reference).
The reference's forward+backward is measured at the shortest length only; at longer lengths it is extrapolated
linearly in L (its loop is O(L); the measured growth is if anything superlinear, so the printed ratio is a lower
bound) and marked "~". fla's naive chunk functions take [B, H, T, D] inputs (pre-transposed, contiguous, outside the
timing), run at our chunk size, have no initial state, and fix the query scale at K**-0.5 (equal work).
"""
from __future__ import annotations

import argparse
import re
import time
import warnings

import torch
import torch.nn.functional as F

from hybridc_torch.ops import _cpp_library, delta_rule, gated_delta_rule, rwkv7

CPP_KERNELS = ("delta_rule", "gated_delta_rule")  # the fused C++ kernel exists for these

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    try:
        from fla.ops.delta_rule.naive import delta_rule_chunkwise
        from fla.ops.gated_delta_rule.naive import naive_chunk_gated_delta_rule
        from fla.ops.generalized_delta_rule.dplr.naive import dplr_chunkwise
        HAVE_FLA = True
    except Exception:                                                   # fla absent: skip those rows
        HAVE_FLA = False

B = 4
WIDTHS = {"delta_rule": (4, 64, 64), "gated_delta_rule": (4, 64, 128), "rwkv7": (4, 64, 64)}   # H, K, V
CHUNK = {"delta_rule": 64, "gated_delta_rule": 64, "rwkv7": 16}


def _kb(field: str) -> int | None:
    try:
        m = re.search(rf"{field}:\s+(\d+)", open("/proc/self/status").read())
        return int(m.group(1)) if m else None
    except OSError:
        return None


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _inputs(kernel: str, L: int, seed: int = 0):
    """Inputs in the layers' regimes; every tensor requires grad. Returns a tuple of positional args."""
    H, K, V = WIDTHS[kernel]
    g = torch.Generator().manual_seed(seed)

    def rn(*shape):
        return torch.randn(*shape, generator=g)

    if kernel == "rwkv7":
        kk = F.normalize(rn(B, L, H, K), dim=-1)
        args = (rn(B, L, H, K), -0.6065 * torch.sigmoid(rn(B, L, H, K)), 0.3 * rn(B, L, H, K), rn(B, L, H, V),
                -kk, kk * torch.sigmoid(rn(B, L, H, K)))
    else:
        q, k = F.normalize(rn(B, L, H, K), dim=-1), F.normalize(rn(B, L, H, K), dim=-1)
        args = (q, k, rn(B, L, H, V))
        if kernel == "gated_delta_rule":
            args += (F.logsigmoid(rn(B, L, H)) / 4,)
        args += (torch.sigmoid(rn(B, L, H)),)
    return tuple(a.requires_grad_() for a in args)


def _ours(kernel, impl):
    entry = {"delta_rule": delta_rule, "gated_delta_rule": gated_delta_rule, "rwkv7": rwkv7}[kernel]
    extra = {"scale": None} if kernel == "rwkv7" else {}                # K**-0.5 like fla's naive dplr
    return lambda *a: entry(*a, impl=impl, **extra)[0]


def _fla(kernel):
    """fla's naive chunk form on [B, H, T, D] tensors (prepared by _fla_inputs)."""
    C = CHUNK[kernel]
    if kernel == "delta_rule":
        return lambda q, k, v, beta: delta_rule_chunkwise(q, k, v, beta, chunk_size=C)[0]
    if kernel == "gated_delta_rule":                                    # fla's own layout is [B, T, H, D]
        return lambda q, k, v, g, beta: naive_chunk_gated_delta_rule(q, k, v, g, beta, chunk_size=C)[0]
    return lambda r, w, k, v, a, b: dplr_chunkwise(r, k, v, a, b, w, chunk_size=C)[0]


def _fla_inputs(kernel, args):
    if kernel == "gated_delta_rule":
        return args
    return tuple(a.detach().transpose(1, 2).contiguous().requires_grad_() for a in args)


def _time(fn, args, reps, backward):
    """Min wall time over reps, and the peak RSS growth (MiB) of one run, or None."""
    best, peak = float("inf"), None
    for i in range(reps):
        base = _kb("VmRSS")
        tracked = i == 0 and base is not None and _reset_peak()
        t = time.perf_counter()
        if backward:
            for a in args:
                a.grad = None
            fn(*args).sum().backward()
        else:
            with torch.no_grad():
                fn(*args)
        best = min(best, time.perf_counter() - t)
        if tracked:
            hwm = _kb("VmHWM")
            peak = None if hwm is None else max(0, hwm - base) / 1024
    return best, peak


def _fmt_ms(s, approx=False):
    return ("~" if approx else "") + f"{s * 1e3:.1f}"


def _fmt_tok(L, s, approx=False):
    return ("~" if approx else "") + f"{B * L / s:,.0f}"


def bench(kernel, lengths, reps):
    H, K, V = WIDTHS[kernel]
    print(f"\n== {kernel}  (B={B}, H={H}, K={K}, V={V}, fp32, {torch.get_num_threads()} threads; "
          f"ours: impl='chunk', chunk {CHUNK[kernel]}) ==")
    head = (f"{'impl':<22}{'L':>6}{'fwd ms':>10}{'fwd tok/s':>12}{'f+b ms':>11}{'f+b tok/s':>12}{'f+b peak MiB':>14}"
            f"{'ours faster: fwd':>18}{'f+b':>8}")
    print(head)
    print("-" * len(head))
    warm = _inputs(kernel, 2 * CHUNK[kernel] + 1 if not HAVE_FLA else 2 * CHUNK[kernel])
    for fn, args in [(_ours(kernel, "chunk"), warm), (_ours(kernel, "reference"), warm)] + (
            [(_fla(kernel), _fla_inputs(kernel, warm))] if HAVE_FLA else []):
        _time(fn, args, 1, True)                                        # warm-up: lazy inits, allocator
    ref_fb_per_token = None
    for L in lengths:
        args = _inputs(kernel, L)
        rows = []
        _time(_ours(kernel, "chunk"), args, 1, False)                   # untimed: first touch of this length's memory
        ours_f, _ = _time(_ours(kernel, "chunk"), args, reps, False)
        ours_fb, ours_mem = _time(_ours(kernel, "chunk"), args, reps, True)
        rows.append(("ours (chunk)", ours_f, ours_fb, ours_mem, False))
        cpp = None
        if kernel in CPP_KERNELS and _cpp_library.available():  # the fused C++ kernel, auto on CPU
            _time(_ours(kernel, "cpp"), args, 1, True)
            cpp_f, _ = _time(_ours(kernel, "cpp"), args, reps, False)
            cpp_fb, cpp_mem = _time(_ours(kernel, "cpp"), args, reps, True)
            rows.append(("ours (cpp, auto)", cpp_f, cpp_fb, cpp_mem, False))
            cpp = (cpp_f, cpp_fb)
        ref_f, _ = _time(_ours(kernel, "reference"), args, 1, False)
        if ref_fb_per_token is None:
            ref_fb, ref_mem = _time(_ours(kernel, "reference"), args, 1, True)
            ref_fb_per_token = ref_fb / L
            with torch.no_grad():                                       # agreement at this length
                diff = (_ours(kernel, "chunk")(*args) - _ours(kernel, "reference")(*args)).abs().max().item()
            rows.append(("our reference", ref_f, ref_fb, ref_mem, False))
        else:
            diff = None
            rows.append(("our reference", ref_f, ref_fb_per_token * L, None, True))
        if HAVE_FLA:
            fargs = _fla_inputs(kernel, args)
            fla_f, _ = _time(_fla(kernel), fargs, reps, False)
            fla_fb, fla_mem = _time(_fla(kernel), fargs, reps, True)
            rows.append(("fla naive chunk", fla_f, fla_fb, fla_mem, False))
        for name, f, fb, mem, approx in rows:
            ratio_f = "" if name.startswith("ours") else f"{f / ours_f:.1f}x"
            ratio_fb = "" if name.startswith("ours") else ("~" if approx else "") + f"{fb / ours_fb:.1f}x"
            print(f"{name:<22}{L:>6}{_fmt_ms(f):>10}{_fmt_tok(L, f):>12}{_fmt_ms(fb, approx):>11}"
                  f"{_fmt_tok(L, fb, approx):>12}{'-' if mem is None else f'{mem:.0f}':>14}{ratio_f:>18}{ratio_fb:>8}")
        if diff is not None:
            print(f"{'':<22}max |ours - reference| output at L={L}: {diff:.1e}")
        if cpp is not None:
            ref = rows[2 if rows[1][0].startswith("ours") else 1]
            line = (f"{'':<22}cpp: {ours_f / cpp[0]:.1f}x / {ours_fb / cpp[1]:.1f}x faster than chunk (fwd / f+b), "
                    f"{ref[1] / cpp[0]:.1f}x / {'~' if ref[4] else ''}{ref[2] / cpp[1]:.1f}x than the reference")
            fla = [r for r in rows if r[0] == "fla naive chunk"]
            if fla:
                line += f", {fla[0][1] / cpp[0]:.1f}x / {fla[0][2] / cpp[1]:.1f}x than fla naive chunk"
            print(line)
    print("(~: the reference's forward+backward extrapolated linearly from the first length; a lower bound)")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lengths", type=int, nargs="+", default=[1024, 4096])
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--kernels", nargs="+", default=list(WIDTHS), choices=list(WIDTHS))
    opts = ap.parse_args(argv)
    torch.set_num_threads(opts.threads)
    try:
        import os
        load = f", load average {os.getloadavg()[0]:.1f}"
    except (OSError, AttributeError):
        load = ""
    print(f"torch {torch.__version__}, fla naive references {'present' if HAVE_FLA else 'absent'}{load}")
    t0 = time.perf_counter()
    for kernel in opts.kernels:
        bench(kernel, sorted(opts.lengths), opts.reps)
    print(f"\ntotal benchmark time {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
