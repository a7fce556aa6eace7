"""GPU kernels (torch + Triton) at the shapes the field publishes, against the memory-bandwidth limit and fla.

    python -m benchmarks.gpu [--dtypes bf16 fp32] [--reps 20] [--only selective_scan ssd gated_delta_rule ...]
    TRITON_INTERPRET=1 python -m benchmarks.gpu --smoke        # CPU: tiny shapes, checks the script itself

Per kernel, shape and input dtype (state always fp32): forward and forward+backward time (CUDA events, median of
--reps after warm-up), achieved bandwidth (bytes that must be read and written once / time), and ratios measured in the
same run:
    bound      that byte count over the device-to-device copy bandwidth measured here (a 1 GiB `copy_`): the time
               no kernel can beat; "x bound" = our time / bound (target for the selective scan: <= 3x)
    chunk      our portable torch chunked form on the same GPU (SSD, delta rules, linear recurrence)
    reference  our sequential torch reference on the GPU (timed at the shortest length only; it is a Python loop)
    fla        flash-linear-attention's Triton `chunk_gated_delta_rule` (target: ours <= 1.5x its time)
Shapes (issue 6): selective scan B8 D2048 N16/N64 L2048/8192; SSD and the delta rules B4 T2048 H16 D128 and
B1 T8192 H96 D128; linear recurrence (8, L, 1536) for L = 2k, 16k, 64k.
"""
from __future__ import annotations

import argparse
import os

import torch
import torch.nn.functional as F

from hybridc_torch.ops import delta_rule, gated_delta_rule, linear_recurrence, selective_scan, ssd

DT = {"bf16": torch.bfloat16, "fp32": torch.float32}
SHAPES = {
    "selective_scan": [dict(B=8, D=2048, N=16, L=2048), dict(B=8, D=2048, N=16, L=8192),
                       dict(B=8, D=2048, N=64, L=2048), dict(B=8, D=2048, N=64, L=8192)],
    "ssd": [dict(B=4, T=2048, H=16, P=128, N=128), dict(B=1, T=8192, H=96, P=128, N=128)],
    "gated_delta_rule": [dict(B=4, T=2048, H=16, K=128, V=128), dict(B=1, T=8192, H=96, K=128, V=128)],
    "delta_rule": [dict(B=4, T=2048, H=16, K=128, V=128), dict(B=1, T=8192, H=96, K=128, V=128)],
    "linear_recurrence": [dict(B=8, L=2048, D=1536), dict(B=8, L=16384, D=1536), dict(B=8, L=65536, D=1536)],
}
SMOKE = {
    "selective_scan": [dict(B=1, D=8, N=4, L=19)], "ssd": [dict(B=1, T=19, H=2, P=16, N=16)],
    "gated_delta_rule": [dict(B=1, T=19, H=2, K=16, V=16)], "delta_rule": [dict(B=1, T=19, H=2, K=16, V=16)],
    "linear_recurrence": [dict(B=1, L=19, D=16)],
}


def inputs(kernel: str, s: dict, dtype, device):
    """Positional args (leaves requiring grad) and keyword args of the public entry point, plus bytes moved once."""
    g = torch.Generator(device="cpu").manual_seed(0)

    def rn(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g) * scale).to(device=device, dtype=dtype).requires_grad_()

    size = torch.tensor([], dtype=dtype).element_size()
    if kernel == "selective_scan":
        B, D, N, L = s["B"], s["D"], s["N"], s["L"]
        A = (-torch.rand(D, N, generator=g) * 4 - 0.1).to(device).requires_grad_()
        args = (rn(B, D, L), rn(B, D, L, scale=0.5), A, rn(B, N, L), rn(B, N, L))
        kw = dict(D=torch.randn(D, device=device).requires_grad_(), z=rn(B, D, L),
                  delta_bias=torch.randn(D, device=device).requires_grad_(), delta_softplus=True)
        moved = size * (4 * B * D * L + 2 * B * N * L)                 # u, delta, z, B, C in; out
    elif kernel == "ssd":
        B, T, H, P, N = s["B"], s["T"], s["H"], s["P"], s["N"]
        A = (-torch.rand(H, generator=g) * 4 - 0.5).to(device).requires_grad_()
        args = (rn(B, T, H, P), rn(B, T, H, scale=0.5), A, rn(B, T, 1, N), rn(B, T, 1, N))
        kw = dict(chunk_size=64 if T < 64 else 256, dt_bias=torch.randn(H, device=device).requires_grad_(),
                  dt_softplus=True)
        moved = size * (2 * B * T * H * P + B * T * H + 2 * B * T * N)
    elif kernel == "linear_recurrence":
        B, L, D = s["B"], s["L"], s["D"]
        a = (0.9 + 0.1 * torch.rand(B, L, D, generator=g)).to(device=device, dtype=dtype).requires_grad_()
        args, kw = (a, rn(B, L, D)), {}
        moved = size * 3 * B * L * D
    else:
        B, T, H, K, V = s["B"], s["T"], s["H"], s["K"], s["V"]
        q = F.normalize(torch.randn(B, T, H, K, generator=g), dim=-1).to(device=device, dtype=dtype).requires_grad_()
        k = F.normalize(torch.randn(B, T, H, K, generator=g), dim=-1).to(device=device, dtype=dtype).requires_grad_()
        beta = torch.sigmoid(torch.randn(B, T, H, generator=g)).to(device=device, dtype=dtype).requires_grad_()
        if kernel == "gated_delta_rule":
            gate = (F.logsigmoid(torch.randn(B, T, H, generator=g)) / 4).to(device=device).requires_grad_()
            args = (q, k, rn(B, T, H, V), gate, beta)
        else:
            args = (q, k, rn(B, T, H, V), beta)
        kw = {}
        moved = size * (B * T * H * (2 * K + 2 * V + 1)) + 4 * B * T * H
    return args, kw, moved


ENTRY = {"selective_scan": selective_scan, "ssd": ssd, "linear_recurrence": linear_recurrence,
         "gated_delta_rule": gated_delta_rule, "delta_rule": delta_rule}


def first(out):
    return out[0] if isinstance(out, tuple) else out


def timer(device):
    """fn -> median seconds over reps (CUDA events on a GPU, perf_counter elsewhere)."""
    def measure(fn, reps):
        fn()                                                            # warm-up (compiles Triton kernels)
        times = []
        for _ in range(reps):
            if device.type == "cuda":
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                torch.cuda.synchronize()
                start.record()
                fn()
                end.record()
                torch.cuda.synchronize()
                times.append(start.elapsed_time(end) / 1e3)
            else:
                import time
                t = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t)
        return sorted(times)[len(times) // 2]
    return measure


def copy_bandwidth(device, measure) -> float:
    """Device-to-device bytes/s of a 1 GiB copy (read + write counted)."""
    n = (1 << 28) if device.type == "cuda" else (1 << 20)
    x, y = torch.empty(n, device=device), torch.empty(n, device=device)
    return 2 * 4 * n / measure(lambda: y.copy_(x), 10)


def run_case(kernel, impl, args, kw, measure, reps):
    fn = ENTRY[kernel]

    def fwd():
        with torch.no_grad():
            fn(*args, **kw, impl=impl)

    def fwd_bwd():
        for t in list(args) + [v for v in kw.values() if torch.is_tensor(v)]:
            t.grad = None
        first(fn(*args, **kw, impl=impl)).float().sum().backward()

    return measure(fwd, reps), measure(fwd_bwd, reps)


def fla_case(args, measure, reps):
    from fla.ops.gated_delta_rule import chunk_gated_delta_rule

    q, k, v, g, beta = args

    def fwd():
        with torch.no_grad():
            chunk_gated_delta_rule(q, k, v, g, beta)

    def fwd_bwd():
        for t in args:
            t.grad = None
        chunk_gated_delta_rule(q, k, v, g, beta)[0].float().sum().backward()

    return measure(fwd, reps), measure(fwd_bwd, reps)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dtypes", nargs="+", default=["bf16", "fp32"], choices=list(DT))
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--only", nargs="+", choices=list(SHAPES), default=list(SHAPES))
    ap.add_argument("--smoke", action="store_true", help="tiny shapes on CPU (TRITON_INTERPRET=1): checks the script")
    opts = ap.parse_args(argv)
    device = torch.device("cpu" if opts.smoke else "cuda")
    measure = timer(device)
    bw = copy_bandwidth(device, measure)
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu (smoke)"
    print(f"device {name}, torch {torch.__version__}, copy bandwidth {bw / 1e9:.0f} GB/s, "
          f"TRITON_INTERPRET={os.environ.get('TRITON_INTERPRET', '0')}")
    print("| kernel | shape | dtype | impl | fwd ms | f+b ms | fwd GB/s | fwd x bound | ours faster: fwd | f+b |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for kernel in opts.only:
        for s in (SMOKE if opts.smoke else SHAPES)[kernel]:
            shape = " ".join(f"{k}{v}" for k, v in s.items())
            for dname in opts.dtypes:
                args, kw, moved = inputs(kernel, s, DT[dname], device)
                bound = moved / bw
                length = s.get("L", s.get("T"))
                cases = [("triton", lambda: run_case(kernel, "triton", args, kw, measure, opts.reps))]
                if kernel != "selective_scan":
                    cases.append(("chunk", lambda: run_case(kernel, "chunk", args, kw, measure,
                                                            max(3, opts.reps // 4))))
                if length <= 2048 or opts.smoke:
                    cases.append(("reference", lambda: run_case(kernel, "reference", args, kw, measure, 1)))
                if kernel == "gated_delta_rule" and device.type == "cuda":
                    cases.append(("fla chunk_gated_delta_rule", lambda: fla_case(args, measure, opts.reps)))
                ours = None
                for impl, case in cases:  # one failing case (a kernel's resources, fla missing) is a row, not the end
                    try:
                        f, fb = case()
                    except Exception as e:  # noqa: BLE001
                        print(f"| {kernel} | {shape} | {dname} | {impl} | failed: {type(e).__name__}: "
                              f"{str(e).splitlines()[0][:160] if str(e) else ''} | | | | | |")
                        if device.type == "cuda":
                            torch.cuda.empty_cache()
                        continue
                    if impl == "triton":
                        ours = (f, fb)
                    rf = "" if impl == "triton" or ours is None else f"{f / ours[0]:.2f}x"
                    rfb = "" if impl == "triton" or ours is None else f"{fb / ours[1]:.2f}x"
                    print(f"| {kernel} | {shape} | {dname} | {impl} | {f * 1e3:.3f} | {fb * 1e3:.3f} | "
                          f"{moved / f / 1e9:.0f} | {f / bound:.2f} | {rf} | {rfb} |")
                args = kw = cases = None  # the inputs freed before the next shape (the lambdas held them too)
                if device.type == "cuda":
                    torch.cuda.empty_cache()
    print(f"(bound: bytes read and written once / {bw / 1e9:.0f} GB/s; fwd GB/s above that is impossible: a bug)")


if __name__ == "__main__":
    main()
