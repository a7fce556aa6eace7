"""The Mamba-2 layer on CPU against transformers' ``Mamba2Mixer`` (its pure-torch path), issue 16's target shape.

    python -m benchmarks.mamba2_layer [--lengths 1024] [--rounds 3] [--reps 2] [--threads 2] [--no-jax] [--cpu-time]

d_model 256, expand 2 (E = 512), head_dim 64 (H = 8), state 64, groups 1, chunk 256, batch 4, fp32. Contenders, all
with the same weights (transformers' parameter names equal ours; outputs checked equal before timing):
    ours impl=cpp        our torch layer on the fused C++ SSD kernel (what auto picks on CPU)
    ours impl=chunk      our torch layer on the chunked SSD (the same algorithm as transformers' torch path)
    transformers         Mamba2Mixer.forward on CPU (torch_forward: chunked SSD in torch)
    JAX cpp / scan_chunk our JAX layer, jitted (compile excluded), on the C++ kernel as an XLA custom call (auto) and
                         on the lax.scan forward + chunked backward (HYBRIDC_KERNEL=ssd=scan_chunk at trace time)
forward = no grad; forward+backward = a sum of the output, gradients of the input and every parameter. The machine is
shared: every contender is timed once per round (min over --reps calls, after a warm-up), --rounds rounds, and the
minimum over rounds is kept; ratios are of those minima, from the same run. --cpu-time (with --threads 1 and
--no-jax) times the process's CPU time instead of the wall clock: the work each contender does, much less sensitive
to other processes' load than wall time (which counts the time a loaded machine takes the core away).
"""
from __future__ import annotations

import argparse
import os
import time
import warnings

import torch

import hybridc
from hybridc_torch.model import make_mixer

from benchmarks.layers import _run

B, DIM, HEAD_DIM, STATE = 4, 256, 64, 64
CLOCK = time.perf_counter  # --cpu-time: time.process_time
PROGRAM = f"dim {DIM}\nlayers mamba2(head_dim={HEAD_DIM}, state={STATE})\n"


def _spec():
    return hybridc.load(PROGRAM).layers[0].mixers[0]


def _hf(layer, spec):
    from transformers import Mamba2Config
    from transformers.models.mamba2.modeling_mamba2 import Mamba2Mixer

    cfg = Mamba2Config(hidden_size=DIM, state_size=spec.state, expand=spec.inner // DIM, conv_kernel=spec.conv,
                       head_dim=spec.head_dim, num_heads=spec.heads, n_groups=spec.groups, chunk_size=spec.chunk,
                       time_step_limit=(0.0, float("inf")), layer_norm_epsilon=1e-5, use_bias=spec.proj_bias,
                       use_conv_bias=spec.conv_bias, num_hidden_layers=1)
    hf = Mamba2Mixer(cfg, 0)
    hf.load_state_dict(layer.state_dict())
    return (lambda x: hf(x)), list(hf.parameters())  # CPU: torch_forward (no CUDA kernels)


def _timed(fn, x, params, reps, backward):
    _run(fn, x, params, backward)  # warm-up
    best = float("inf")
    for _ in range(reps):
        t = CLOCK()
        _run(fn, x, params, backward)
        best = min(best, CLOCK() - t)
    return best


def _jax_contender(spec, layer, impl, xj):
    """(params, forward, forward+backward) of the jitted JAX layer on the torch weights, traced and compiled at xj's
    shape with HYBRIDC_KERNEL=ssd=`impl` (the choice is made at trace time; later calls reuse the compiled code)."""
    import jax
    import jax.numpy as jnp

    from hybridc_jax.model import kind_module

    mod = kind_module("mamba2")
    params = {k: jnp.asarray(v.detach().numpy()) for k, v in layer.state_dict().items()}
    fwd = jax.jit(lambda p, x: mod.apply(p, x, spec)[0])
    grad = jax.jit(jax.grad(lambda p, x: mod.apply(p, x, spec)[0].sum(), argnums=(0, 1)))
    old = os.environ.get("HYBRIDC_KERNEL")
    os.environ["HYBRIDC_KERNEL"] = f"ssd={impl}"
    try:
        for f in (fwd, grad):
            jax.block_until_ready(f(params, xj))
    finally:
        if old is None:
            os.environ.pop("HYBRIDC_KERNEL")
        else:
            os.environ["HYBRIDC_KERNEL"] = old
    return params, fwd, grad


def _jax_timed(fn, params, x, reps):
    import jax

    jax.block_until_ready(fn(params, x))  # warm-up
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        jax.block_until_ready(fn(params, x))
        best = min(best, time.perf_counter() - t)
    return best


def _contenders(spec):
    """{name: (forward callable, parameters)}: our torch layer per impl (same weights) and transformers' mixer."""
    torch.manual_seed(0)
    layers = {impl: make_mixer(spec, DIM, impl) for impl in ("cpp", "chunk")}
    layers["chunk"].load_state_dict(layers["cpp"].state_dict())
    out = {f"ours impl={impl}": ((lambda m: lambda x: m(x)[0])(m), list(m.parameters())) for impl, m in layers.items()}
    try:
        out["transformers Mamba2Mixer (torch path)"] = _hf(layers["cpp"], spec)
    except ImportError:
        print("(transformers not installed: its row is skipped)")
    return layers["cpp"], out


def bench_length(L, rounds, reps, use_jax):
    spec = _spec()
    layer, contenders = _contenders(spec)
    x = torch.randn(B, L, DIM, generator=torch.Generator().manual_seed(0)).requires_grad_()
    with torch.no_grad():
        ref = contenders["ours impl=cpp"][0](x)
        diffs = {name: (fn(x) - ref).abs().max().item() for name, (fn, _) in contenders.items()}
    scale = max(1.0, ref.abs().max().item())
    assert all(d < 1e-3 * scale for d in diffs.values()), f"outputs differ: {diffs}"
    jax_parts = {}
    if use_jax:
        xj = x.detach().numpy()
        jax_parts = {f"JAX impl={impl}": _jax_contender(spec, layer, impl, xj) for impl in ("cpp", "scan_chunk")}
    best = {}
    for _ in range(rounds):
        for name, (fn, ps) in contenders.items():
            f, fb = _timed(fn, x, ps, reps, False), _timed(fn, x, ps, reps, True)
            old = best.get(name, (float("inf"), float("inf")))
            best[name] = (min(old[0], f), min(old[1], fb))
        for name, (pj, fwd, grad) in jax_parts.items():
            f, fb = _jax_timed(fwd, pj, xj, reps), _jax_timed(grad, pj, xj, reps)
            old = best.get(name, (float("inf"), float("inf")))
            best[name] = (min(old[0], f), min(old[1], fb))
    hf_name = next((n for n in best if n.startswith("transformers")), None)
    ours = best["ours impl=cpp"]
    print(f"\n### L = {L} (max |output - ours cpp|: " + ", ".join(f"{n} {d:.1e}" for n, d in diffs.items()) + ")\n")
    print("| layer | fwd ms | f+b ms | transformers / this: fwd | f+b | this / ours cpp: fwd | f+b |")
    print("|---|---|---|---|---|---|---|")
    for name, (f, fb) in best.items():
        vs_hf = ("-", "-") if hf_name is None else (f"{best[hf_name][0] / f:.2f}x", f"{best[hf_name][1] / fb:.2f}x")
        print(f"| {name} | {f * 1e3:.1f} | {fb * 1e3:.1f} | {vs_hf[0]} | {vs_hf[1]} | {f / ours[0]:.2f} | "
              f"{fb / ours[1]:.2f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lengths", type=int, nargs="+", default=[1024])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-jax", action="store_true")
    ap.add_argument("--cpu-time", action="store_true", help="process CPU time instead of wall time (torch rows)")
    opts = ap.parse_args()
    if opts.cpu_time:
        global CLOCK
        CLOCK = time.process_time
    torch.set_num_threads(opts.threads)
    warnings.simplefilter("ignore")
    load = f", load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    print(f"# Mamba-2 layer: torch {torch.__version__}, {opts.threads} threads, B={B}, d_model={DIM}, "
          f"head_dim={HEAD_DIM}, state={STATE}, fp32, {'CPU' if opts.cpu_time else 'wall'} time{load}")
    t0 = time.perf_counter()
    for L in opts.lengths:
        bench_length(L, opts.rounds, opts.reps, not opts.no_jax)
    print(f"\ntotal {time.perf_counter() - t0:.0f} s, load average now {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
