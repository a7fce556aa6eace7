"""Every scan kernel on CPU: our fast forms against our sequential references, the field's implementations, and JAX.

    python -m benchmarks.kernels [--lengths 1024 4096] [--reps 2] [--threads 2] [--skip ssm delta jax]

Three sections, one run (all ratios inside a section are measured side by side):
    ssm    selective scan (vs torch.exp over [B, L, E, N], transformers' scans, mambapy), SSD, linear recurrence
           (benchmarks/kernels_ssm.py)
    delta  delta rule, gated delta rule, RWKV-7 (vs flash-linear-attention's naive chunk forms) (kernels_delta.py)
    jax    each JAX kernel (auto: its fast form) against the torch kernel (auto) on the same inputs, and the JAX
           sequential reference; jitted, compile time excluded and printed apart (benchmarks/_jax_kernels.py)
Batch 4, d_model 256 at the layers' natural widths, fp32.
"""
from __future__ import annotations

import argparse
import time


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lengths", type=int, nargs="+", default=[1024, 4096])
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip", nargs="+", default=[], choices=["ssm", "delta", "jax"])
    opts = ap.parse_args(argv)
    common = ["--lengths", *map(str, opts.lengths), "--reps", str(opts.reps), "--threads", str(opts.threads)]
    t0 = time.perf_counter()
    if "ssm" not in opts.skip:
        from . import kernels_ssm

        kernels_ssm.main(common)
    if "delta" not in opts.skip:
        from . import kernels_delta

        kernels_delta.main(common)
    if "jax" not in opts.skip:
        from . import _jax_kernels

        _jax_kernels.main(common)
    print(f"\nall kernel benchmarks: {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
