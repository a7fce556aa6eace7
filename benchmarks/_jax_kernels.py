"""JAX scan kernels on CPU: what impl "auto" runs against the JAX `lax.scan` references and the torch kernels.

    python -m benchmarks._jax_kernels [--lengths 1024 4096] [--reps 3] [--threads 2] [--only ssd rwkv7 ...]

Called by ``python -m benchmarks.kernels`` (section "jax"); ``cases(length)`` gives the jitted callables to other
scripts. Batch 4, d_model 256 at the layers' natural widths, fp32:
    selective_scan     Mamba-1: E = 512 channels, N = 16, softplus(delta + bias), D skip, silu(z) gate
    ssd                Mamba-2 defaults: H8 x P64 (E = 512), N = 128, G = 1, chunk 256
    delta_rule         DeltaNet: H4, K64, V64
    gated_delta_rule   Gated DeltaNet defaults: H4, K64, V128 (expand_v 2)
    rwkv7              RWKV-7: H4, K64, V64
    linear_recurrence  RG-LRU: W = 256
JAX "auto" is: for the selective scan, the linear recurrence and SSD the C++ kernels torch uses, as XLA custom
calls ("cpp"); for the delta family "scan_chunk" (the lax.scan forward when not differentiated, the chunked
form's forward and VJP under jax.grad) (each measured fastest, see the kernel modules). Each JAX callable is ``jax.jit``-ed; times exclude compilation
(the first call; the forward+backward's is printed) and wait for the result (``block_until_ready``). fwd = the
kernel's outputs; fwd+bwd = gradients of a fixed random linear functional of all outputs w.r.t. every float input.
Times are the minimum over --reps runs after one warm-up call; the JAX reference is timed once, at the shortest
length, and scaled linearly to the longer ones ("~"). Torch runs the same inputs through its entry point
with impl="auto" (its CPU fast form) under torch.set_num_threads(--threads); XLA:CPU sizes its own thread pool
(this machine's cores). Torch's multi-threaded small ops stall badly when other processes load the cores (seconds
instead of tens of ms): compare only rows measured on an idle machine. JAX_DISABLE_MOST_OPTIMIZATIONS must not be
set here (the tests set it): the benchmark refuses to run with it.
"""
from __future__ import annotations

import argparse
import os
import time
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from hybridc_jax import ops as jops

BATCH, D_MODEL = 4, 256
KERNELS = ("selective_scan", "ssd", "delta_rule", "gated_delta_rule", "rwkv7", "linear_recurrence")
WIDTHS = {"selective_scan": "E512 N16", "ssd": "H8 P64 N128 chunk 256", "delta_rule": "H4 K64 V64 chunk 64",
          "gated_delta_rule": "H4 K64 V128 chunk 64", "rwkv7": "H4 K64 V64 chunk 16", "linear_recurrence": "W256"}


class Case(NamedTuple):
    name: str
    fwd: Callable      # fwd(inputs) -> outputs (jitted)
    fwdbwd: Callable   # fwdbwd(inputs) -> gradients w.r.t. every float input (jitted)
    inputs: dict       # keyword arguments of the kernel, jnp arrays


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def inputs(kernel: str, length: int, seed: int = 0) -> dict:
    """Random fp32 numpy inputs for `kernel` at the benchmark shapes (keyword arguments of its entry point)."""
    rng = np.random.default_rng(seed)
    r = lambda *s: rng.standard_normal(s, dtype=np.float32)  # noqa: E731
    u = lambda *s: rng.random(s, dtype=np.float32)  # noqa: E731
    B, L = BATCH, length
    if kernel == "selective_scan":
        E, N = 2 * D_MODEL, 16
        return dict(u=r(B, E, L), delta=r(B, E, L) * 0.5, A=-u(E, N) * 4 - 0.1, B=r(B, N, L), C=r(B, N, L),
                    D=r(E), z=r(B, E, L), delta_bias=r(E))
    if kernel == "ssd":
        H, P, N = 8, 64, 128
        return dict(x=r(B, L, H, P), dt=r(B, L, H) * 0.5, A=-u(H) * 4 - 0.5, B=r(B, L, 1, N), C=r(B, L, 1, N),
                    D=r(H), dt_bias=r(H))
    if kernel == "linear_recurrence":
        return dict(a=0.9 + 0.1 * u(B, L, D_MODEL), x=r(B, L, D_MODEL), initial_state=r(B, D_MODEL))
    H, K = 4, 64
    V = 128 if kernel == "gated_delta_rule" else 64
    q, k, v = _unit(r(B, L, H, K)), _unit(r(B, L, H, K)), r(B, L, H, V)
    if kernel == "delta_rule":
        return dict(q=q, k=k, v=v, beta=_sigmoid(r(B, L, H)))
    if kernel == "gated_delta_rule":
        return dict(q=q, k=k, v=v, g=-np.log1p(np.exp(r(B, L, H))), beta=_sigmoid(r(B, L, H)))
    if kernel == "rwkv7":
        kk = _unit(r(B, L, H, K))
        return dict(r=r(B, L, H, K), w=-np.exp(-0.5 - _sigmoid(r(B, L, H, K))), k=k, v=v, a=-kk,
                    b=kk * _sigmoid(r(B, L, H, K)))
    raise KeyError(kernel)


def jax_call(kernel: str, impl: str = "auto") -> Callable:
    """kwargs -> tuple of the kernel's outputs, through the JAX entry point."""
    def fn(**kw):
        if kernel == "selective_scan":
            return jops.selective_scan(**kw, delta_softplus=True, return_last_state=True, impl=impl)
        if kernel == "ssd":
            return jops.ssd(**kw, chunk_size=256, dt_softplus=True, return_final_states=True, impl=impl)
        if kernel == "linear_recurrence":
            return jops.linear_recurrence(**kw, impl=impl)
        mod = {"delta_rule": jops.delta_rule, "gated_delta_rule": jops.gated_delta_rule, "rwkv7": jops.rwkv7}[kernel]
        return mod(**kw, output_final_state=True, impl=impl)
    return fn


def _weights(outs, seed=1):
    rng = np.random.default_rng(seed)
    return [jnp.asarray(rng.standard_normal(o.shape, dtype=np.float32)) for o in outs]


def make_case(kernel: str, length: int, impl: str = "auto") -> Case:
    """Jitted forward and forward+backward of `kernel` through the JAX entry point with `impl`."""
    call = jax_call(kernel, impl)
    kw = {k: jnp.asarray(v) for k, v in inputs(kernel, length).items()}
    ws = _weights(jax.eval_shape(lambda kw: call(**kw), kw))

    def loss(kw):
        return sum(jnp.sum(o * w) for o, w in zip(call(**kw), ws))

    return Case(f"{kernel} ({impl})", jax.jit(lambda kw: call(**kw)), jax.jit(jax.grad(loss)), kw)


def cases(length: int, impl: str = "auto") -> list[Case]:
    """One Case per kernel at `length` (B4, d_model 256 natural widths): the lead's ``benchmarks.kernels`` entry."""
    return [make_case(k, length, impl) for k in KERNELS]


def torch_call(kernel: str, length: int):
    """(fwd(), fwdbwd()) closures of the torch kernel (impl="auto") on the same inputs as `inputs`."""
    import torch

    from hybridc_torch import ops as tops

    kw = {k: torch.from_numpy(np.array(v)).requires_grad_() for k, v in inputs(kernel, length).items()}
    fns = {"selective_scan": lambda: tops.selective_scan(**kw, delta_softplus=True, return_last_state=True),
           "ssd": lambda: tops.ssd(**kw, chunk_size=256, dt_softplus=True, return_final_states=True),
           "linear_recurrence": lambda: tops.linear_recurrence(**kw),
           "delta_rule": lambda: tops.delta_rule(**kw, output_final_state=True),
           "gated_delta_rule": lambda: tops.gated_delta_rule(**kw, output_final_state=True),
           "rwkv7": lambda: tops.rwkv7(**kw, output_final_state=True)}
    call = fns[kernel]
    with torch.no_grad():
        ws = [torch.from_numpy(np.asarray(w)) for w in _weights(call())]

    def fwd():
        with torch.no_grad():
            call()

    def fwdbwd():
        loss = sum((o * w).sum() for o, w in zip(call(), ws))
        torch.autograd.grad(loss, list(kw.values()))

    return fwd, fwdbwd


def _min_seconds(fn, reps: int) -> float:
    fn()  # warm-up (and, for JAX, compilation)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def _jax_times(case: Case, reps: int) -> tuple[float, float, float]:
    """(compile s of fwd+bwd, fwd s, fwd+bwd s)."""
    t0 = time.perf_counter()
    jax.block_until_ready(case.fwdbwd(case.inputs))
    compile_s = time.perf_counter() - t0
    fwd = _min_seconds(lambda: jax.block_until_ready(case.fwd(case.inputs)), reps)
    fb = _min_seconds(lambda: jax.block_until_ready(case.fwdbwd(case.inputs)), reps)
    return compile_s, fwd, fb


def bench(lengths, reps: int, only=KERNELS) -> list[dict]:
    """Rows per (length, kernel). The JAX reference is timed at the shortest length only and scaled linearly in L
    to the others (marked "~": its scan is O(L))."""
    rows, ref_at = [], {}
    for length in sorted(lengths):
        for kernel in only:
            t_fwd, t_fb = torch_call(kernel, length)  # torch first: before XLA's threads are busy
            torch_fwd, torch_fb = _min_seconds(t_fwd, reps), _min_seconds(t_fb, reps)
            fast = _jax_times(make_case(kernel, length, "auto"), reps)
            if kernel not in ref_at:
                ref_at[kernel] = (length, _jax_times(make_case(kernel, length, "reference"), 1))
            base, ref = ref_at[kernel]
            rows.append(dict(kernel=kernel, length=length, impl=jax_call_impl(kernel), compile=fast[0],
                             fwd=fast[1], fb=fast[2], ref_fwd=ref[1] * length / base, ref_fb=ref[2] * length / base,
                             ref_scaled=length != base, t_fwd=torch_fwd, t_fb=torch_fb))
            print_row(rows[-1])
    return rows


def jax_call_impl(kernel: str) -> str:
    return jops.OPS[kernel].auto(jax.default_backend())


HEADER = ("| kernel (JAX auto impl), widths | L | JAX fwd ms | JAX ref fwd ms | torch fwd ms | JAX / torch fwd "
          "| JAX fwd+bwd ms | JAX ref fwd+bwd ms | torch fwd+bwd ms | JAX / torch fwd+bwd | compile s |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|")


def print_row(r: dict) -> None:
    ms = lambda s: f"{s * 1e3:.1f}"  # noqa: E731
    ref = (lambda s: f"~{s * 1e3:.0f}") if r["ref_scaled"] else ms  # noqa: E731
    print(f"| {r['kernel']} ({r['impl']}), {WIDTHS[r['kernel']]} | {r['length']} | {ms(r['fwd'])} | "
          f"{ref(r['ref_fwd'])} | {ms(r['t_fwd'])} | {r['fwd'] / r['t_fwd']:.2f}x | {ms(r['fb'])} | "
          f"{ref(r['ref_fb'])} | {ms(r['t_fb'])} | {r['fb'] / r['t_fb']:.2f}x | {r['compile']:.1f} |", flush=True)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lengths", type=int, nargs="+", default=[1024])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", nargs="+", choices=KERNELS, default=list(KERNELS))
    args = ap.parse_args(argv)
    if os.environ.get("JAX_DISABLE_MOST_OPTIMIZATIONS", "").lower() in ("1", "true"):
        raise SystemExit("unset JAX_DISABLE_MOST_OPTIMIZATIONS: it slows compiled code (the tests set it)")
    import torch

    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\n## JAX kernels (jax {jax.__version__}, {jax.default_backend()}) vs torch {torch.__version__} "
          f"({torch.get_num_threads()} threads); batch {BATCH}, fp32, min of {args.reps}; load average {load:.2f}\n")
    print("JAX / torch < 1 means JAX is faster. The JAX reference is timed once (after its compile) at the shortest"
          " length; ~ = scaled linearly from there.\n")
    print(HEADER)
    t0 = time.perf_counter()
    bench(args.lengths, args.reps, args.only)
    print(f"\njax section: {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
