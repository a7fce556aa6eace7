"""CPU speed of the fast SSM kernels (torch) against their sequential references and the field's CPU paths.

    python -m benchmarks.kernels_ssm [--threads 2] [--lengths 1024 4096] [--reps 3] [--ref-length 256]

Batch 4, d_model 256 at the layers' natural widths, fp32:
    selective scan (Mamba-1): E = 512 channels, N = 16                      impl "cpp" (fused C++ kernel)
    SSD (Mamba-2):            E = 512 = 8 heads x 64, N = 128, G = 1, chunk 256    impls "cpp" (fused C++, auto) and
                                                                                  "chunk" (torch)
    linear recurrence (RG-LRU): W = 256                              impls "cpp" (C++ scan) and "chunk" (torch)
Times are medians of --reps runs after one warm-up; tokens/s = batch * length / time. Ratios are measured in the
same run. The sequential references (and transformers' selective scan paths) are timed once at --ref-length (1024)
and extrapolated linearly to the benchmark lengths, marked with "~" (their Python loops are linear in L for the
forward; their autograd backward grows faster than linearly, so "~" understates our fwd+bwd speedup).
Peak memory is not reported: max-RSS deltas are monotonic and say nothing once a larger allocation has happened,
and tracemalloc does not see torch's allocations.
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch

from hybridc_torch.ops import _cpp_library, linear_recurrence, selective_scan, ssd
from hybridc_torch.ops.linear_recurrence.chunk import _auto_chunk

BATCH, D_MODEL = 4, 256


def _median_seconds(fn, reps: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def _fwd(fn):
    def run():
        with torch.no_grad():
            fn()
    return run


def _fwd_bwd(fn, leaves):
    def run():
        for t in leaves:
            t.grad = None
        outs = fn()
        outs = outs if isinstance(outs, tuple) else (outs,)
        sum(o.float().sum() for o in outs).backward()
    return run


class Table:
    def __init__(self, title: str):
        self.title, self.rows = title, []

    def add(self, length, name, fwd, fwd_ref=None, fb=None, fb_ref=None, note=""):
        self.rows.append((length, name, fwd, fwd_ref, fb, fb_ref, note))

    def print(self):
        print(f"\n## {self.title}\n")
        print("| L | impl | fwd ms | fwd tok/s | fwd speedup vs ref | fwd+bwd ms | fwd+bwd tok/s | fwd+bwd speedup vs ref"
              " | note |")
        print("|---|---|---|---|---|---|---|---|---|")
        for length, name, fwd, fwd_ref, fb, fb_ref, note in self.rows:
            tok = BATCH * length

            def ms(v):
                return "-" if v is None else (f"~{v[0] * 1e3:.0f}" if v[1] else f"{v[0] * 1e3:.1f}")

            def tps(v):
                return "-" if v is None else (f"~{tok / v[0]:,.0f}" if v[1] else f"{tok / v[0]:,.0f}")

            def ratio(ref, v):
                if ref is None or v is None:
                    return "-"
                return f"{'~' if ref[1] or v[1] else ''}{ref[0] / v[0]:.1f}x"

            print(f"| {length} | {name} | {ms(fwd)} | {tps(fwd)} | {ratio(fwd_ref, fwd)} | {ms(fb)} | {tps(fb)} | "
                  f"{ratio(fb_ref, fb)} | {note} |")


REF_LENGTH = 1024


def _extrapolated(measured: dict, length: int, key: str):
    """(seconds, extrapolated?) at `length` from the measurement at REF_LENGTH."""
    if (length, key) in measured:
        return measured[(length, key)], False
    base = min(L for L, k in measured if k == key)
    return measured[(base, key)] * length / base, True


# ---------------------------------------------------------------------------------------------- selective scan
def bench_selective_scan(lengths, reps):
    table = Table("selective scan (Mamba-1): B=4, E=512, N=16, fp32")
    E, N = 2 * D_MODEL, 16
    if not _cpp_library.available():
        print("\nselective scan: C++ kernel unavailable here (see the warning); skipped")
        return
    try:
        from transformers.models.mamba.modeling_mamba import mamba_selective_scan
    except ImportError:  # pragma: no cover
        mamba_selective_scan = None
    try:
        import mambapy  # noqa: F401
        has_mambapy = True
    except ImportError:
        has_mambapy = False
    measured, summary = {}, []
    for length in [REF_LENGTH] + list(lengths):
        is_ref = length == REF_LENGTH and not measured
        g = torch.Generator().manual_seed(0)
        kw = dict(u=torch.randn(BATCH, E, length, generator=g), delta=torch.randn(BATCH, E, length, generator=g) * .5,
                  A=-torch.rand(E, N, generator=g) * 4 - 0.1, B=torch.randn(BATCH, N, length, generator=g),
                  C=torch.randn(BATCH, N, length, generator=g), D=torch.randn(E, generator=g),
                  z=torch.randn(BATCH, E, length, generator=g), delta_bias=torch.randn(E, generator=g))
        leaves = [v.requires_grad_() for v in kw.values()]

        def run(impl):
            return lambda: selective_scan(**kw, delta_softplus=True, impl=impl)

        if is_ref:
            measured[(length, "ref")] = _median_seconds(_fwd(run("reference")), 1, warmup=0)
            measured[(length, "ref_fb")] = _median_seconds(_fwd_bwd(run("reference"), leaves), 1, warmup=0)
            if mamba_selective_scan is not None:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    hf = lambda **o: lambda: mamba_selective_scan(  # noqa: E731
                        kw["u"], kw["delta"], kw["A"], kw["B"], kw["C"], kw["D"], kw["z"], kw["delta_bias"],
                        delta_softplus=True, **o)
                    measured[(length, "hf")] = _median_seconds(_fwd(hf()), 1)
                    if has_mambapy:
                        measured[(length, "mambapy")] = _median_seconds(_fwd(hf(use_mambapy=True)), 1)
            continue
        x = torch.randn(BATCH, length, E, N, generator=g)
        exp_s = _median_seconds(lambda: torch.exp(x), reps)
        del x
        fwd = _median_seconds(_fwd(run("cpp")), reps)
        fb = _median_seconds(_fwd_bwd(run("cpp"), leaves), reps)
        ref, ref_fb = _extrapolated(measured, length, "ref"), _extrapolated(measured, length, "ref_fb")
        table.add(length, "ours (cpp)", (fwd, False), ref, (fb, False), ref_fb,
                  f"fwd = {fwd / exp_s:.2f}x torch.exp, fwd+bwd = {fb / exp_s:.2f}x torch.exp")
        table.add(length, "reference (loop)", ref, ref, ref_fb, ref_fb)
        if mamba_selective_scan is not None:
            hf_t = _extrapolated(measured, length, "hf")
            table.add(length, "transformers mamba_selective_scan (loop)", hf_t, ref, None, None,
                      f"ours is {hf_t[0] / fwd:.1f}x faster (fwd only: its backward is quadratic)")
            if has_mambapy:
                mp = _extrapolated(measured, length, "mambapy")
                table.add(length, "transformers + mambapy pscan", mp, ref, None, None,
                          f"materialises [B, L, E, N]; ours is {mp[0] / fwd:.1f}x faster")
        table.add(length, f"torch.exp over [{BATCH}, {length}, {E}, {N}]", (exp_s, False), None, None, None,
                  "the target's yardstick")
        summary.append((length, fwd / exp_s, fb / exp_s))
    if not has_mambapy:
        print("\n(mambapy not installed: its pscan row is skipped)")
    table.print()
    for length, f, b in summary:
        print(f"L={length}: forward {f:.2f}x torch.exp (target <= 2x), forward+backward {b:.2f}x (target <= 6x)")


# ---------------------------------------------------------------------------------------------------- SSD
def bench_ssd(lengths, reps):
    E, P, N, chunk = 2 * D_MODEL, 64, 128, 256
    H = E // P
    table = Table(f"SSD (Mamba-2): B=4, H={H}, P={P}, N={N}, G=1, chunk {chunk}, fp32")
    measured = {}
    for length in [REF_LENGTH] + list(lengths):
        is_ref = length == REF_LENGTH and not measured
        g = torch.Generator().manual_seed(0)
        kw = dict(x=torch.randn(BATCH, length, H, P, generator=g), dt=torch.randn(BATCH, length, H, generator=g) * .5,
                  A=-torch.rand(H, generator=g) * 4 - 0.5, B=torch.randn(BATCH, length, 1, N, generator=g),
                  C=torch.randn(BATCH, length, 1, N, generator=g), D=torch.randn(H, generator=g),
                  dt_bias=torch.randn(H, generator=g))
        leaves = [v.requires_grad_() for v in kw.values()]

        def run(impl):
            return lambda: ssd(**kw, chunk_size=chunk, dt_softplus=True, impl=impl)

        if is_ref:
            measured[(length, "ref")] = _median_seconds(_fwd(run("reference")), 1, warmup=0)
            measured[(length, "ref_fb")] = _median_seconds(_fwd_bwd(run("reference"), leaves), 1, warmup=0)
            continue
        ref, ref_fb = _extrapolated(measured, length, "ref"), _extrapolated(measured, length, "ref_fb")
        if _cpp_library.available():
            fwd = _median_seconds(_fwd(run("cpp")), reps)
            fb = _median_seconds(_fwd_bwd(run("cpp"), leaves), reps)
            table.add(length, "ours (cpp, auto)", (fwd, False), ref, (fb, False), ref_fb)
        fwd = _median_seconds(_fwd(run("chunk")), reps)
        fb = _median_seconds(_fwd_bwd(run("chunk"), leaves), reps)
        table.add(length, "ours (chunk, torch)", (fwd, False), ref, (fb, False), ref_fb)
        table.add(length, "reference (loop)", ref, ref, ref_fb, ref_fb)
    table.print()


# -------------------------------------------------------------------------------------------- linear recurrence
def bench_linear_recurrence(lengths, reps):
    W = D_MODEL
    table = Table(f"linear recurrence (RG-LRU): B=4, W={W}, fp32")
    measured = {}
    for length in [REF_LENGTH] + list(lengths):
        is_ref = length == REF_LENGTH and not measured
        g = torch.Generator().manual_seed(0)
        a = (0.9 + 0.1 * torch.rand(BATCH, length, W, generator=g)).requires_grad_()
        x = torch.randn(BATCH, length, W, generator=g, requires_grad=True)
        h0 = torch.randn(BATCH, W, generator=g, requires_grad=True)

        def run(impl):
            return lambda: linear_recurrence(a, x, h0, impl=impl)

        if is_ref:
            measured[(length, "ref")] = _median_seconds(_fwd(run("reference")), 1)
            measured[(length, "ref_fb")] = _median_seconds(_fwd_bwd(run("reference"), [a, x, h0]), 1, warmup=0)
            continue
        ref, ref_fb = _extrapolated(measured, length, "ref"), _extrapolated(measured, length, "ref_fb")
        if _cpp_library.available():
            fwd = _median_seconds(_fwd(run("cpp")), reps)
            fb = _median_seconds(_fwd_bwd(run("cpp"), [a, x, h0]), reps)
            table.add(length, "ours (cpp, auto)", (fwd, False), ref, (fb, False), ref_fb)
        fwd = _median_seconds(_fwd(run("chunk")), reps)
        fb = _median_seconds(_fwd_bwd(run("chunk"), [a, x, h0]), reps)
        table.add(length, "ours (chunk, torch)", (fwd, False), ref, (fb, False), ref_fb,
                  f"chunk_size auto = {_auto_chunk(length)}")
        table.add(length, "reference (loop)", ref, ref, ref_fb, ref_fb)
    table.print()


def main(argv=None):
    global REF_LENGTH
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--lengths", type=int, nargs="+", default=[1024, 4096])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--ref-length", type=int, default=1024,
                    help="length at which the sequential references are timed, then extrapolated")
    ap.add_argument("--only", choices=["selective_scan", "ssd", "linear_recurrence"], nargs="+")
    args = ap.parse_args(argv)
    REF_LENGTH = args.ref_length
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    start = time.perf_counter()
    try:
        import os
        load = os.getloadavg()[0]
    except OSError:
        load = float("nan")
    print(f"# SSM kernels on CPU: torch {torch.__version__}, {torch.get_num_threads()} threads, load average {load:.2f}")
    only = args.only or ["selective_scan", "ssd", "linear_recurrence"]
    if "selective_scan" in only:
        t = time.perf_counter()
        _cpp_library.load()
        print(f"(C++ selective scan kernel ready in {time.perf_counter() - t:.2f} s: build on first use, then cached)")
        bench_selective_scan(args.lengths, args.reps)
    if "ssd" in only:
        bench_ssd(args.lengths, args.reps)
    if "linear_recurrence" in only:
        bench_linear_recurrence(args.lengths, args.reps)
    print(f"\ntotal {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
