"""Whole-layer CPU speed per mixer kind, torch and JAX, against the field's implementations of the same layer.

    python -m benchmarks.layers [--lengths 1024 4096] [--kinds mamba gru ...] [--reps 2] [--threads 2] [--no-jax]

Batch 4, d_model 256, each kind at its defaults (`dim 256; layers mamba gru ... attn(window=none)`), fp32,
--threads torch threads. Per kind and length: forward (no grad) and forward+backward (a sum of the output, gradients of
the input and every parameter) time, tokens/s (B*L per second), the peak RSS growth of the first forward+backward
(VmHWM reset through /proc/self/clear_refs; rough, reads low when freed memory is reused), and ratios measured in the same
run, after one warm-up call each (times: min over --reps):
    vs attn    our global causal attention layer (SDPA) of the same width: the quadratic baseline
    mamba      transformers' MambaMixer on its CPU path (the sequential `slow_forward`; forward only: its backward
               indexes [B, D, L, N] tensors step by step, ~100 s at L=1024) and mambapy's MambaBlock (parallel scan)
    gru        torch.nn.GRU(256, 256) (the same fused kernel: the ratio shows our layer's overhead)
    JAX        the same layer from the JAX backend with the torch weights, jitted (compile excluded, printed apart)
Ratios are "x faster" for ours: other time / our time (>1 means ours wins). JAX ratio: JAX time / torch time.
"""
from __future__ import annotations

import argparse
import os
import time
import warnings

import torch

import hybridc
from hybridc_torch.model import make_mixer

from .kernels_delta import _kb, _reset_peak

B, DIM = 4, 256
KINDS = ["mamba", "mamba2", "gru", "rwkv", "delta_net", "gated_delta_net", "griffin_lru", "attn"]
PROGRAM = f"dim {DIM}\nlayers {' '.join(k if k != 'attn' else 'attn(window=none)' for k in KINDS)}\n"


def specs() -> dict:
    model = hybridc.load(PROGRAM)
    return {layer.mixers[0].kind: layer.mixers[0] for layer in model.layers}


def _run(fn, x, params, backward):
    if not backward:
        with torch.no_grad():
            fn(x)
        return
    x.grad = None
    for p in params:
        p.grad = None
    fn(x).sum().backward()


def timed(fn, x, params, reps, backward):
    """(min seconds over reps, peak RSS growth MiB of the first rep or None)."""
    _run(fn, x, params, backward)                                      # warm-up
    best, peak = float("inf"), None
    for i in range(reps):
        base = _kb("VmRSS")
        tracked = i == 0 and backward and base is not None and _reset_peak()
        t = time.perf_counter()
        _run(fn, x, params, backward)
        best = min(best, time.perf_counter() - t)
        if tracked:
            hwm = _kb("VmHWM")
            peak = None if hwm is None else max(0, hwm - base) / 1024
    return best, peak


def ours(kind, spec):
    torch.manual_seed(0)
    layer = make_mixer(spec, DIM, "auto")
    return layer, (lambda x: layer(x)[0]), list(layer.parameters())


def transformers_mixer():
    from transformers import MambaConfig
    from transformers.models.mamba.modeling_mamba import MambaMixer

    cfg = MambaConfig(hidden_size=DIM, state_size=16, expand=2, conv_kernel=4, intermediate_size=2 * DIM,
                      time_step_rank=DIM // 16, use_mambapy=False)
    m = MambaMixer(cfg, layer_idx=0)
    return (lambda x: m(x)), list(m.parameters())


def mambapy_block():
    from mambapy.mamba import MambaBlock, MambaConfig

    m = MambaBlock(MambaConfig(d_model=DIM, n_layers=1, d_state=16, expand_factor=2, d_conv=4, pscan=True))
    return (lambda x: m(x)), list(m.parameters())


def nn_gru():
    m = torch.nn.GRU(DIM, DIM, batch_first=True)
    return (lambda x: m(x)[0]), list(m.parameters())


def comparisons(kind):
    """[(name, factory, forward_only)] for this kind; a missing package drops its row."""
    table = {"mamba": [("transformers MambaMixer (slow path)", transformers_mixer, True),
                       ("mambapy MambaBlock (pscan)", mambapy_block, False)],
             "gru": [("torch.nn.GRU", nn_gru, False)]}
    return table.get(kind, [])


def jax_layer(kind, spec, torch_layer):
    """(jitted forward, jitted forward+backward, compile seconds) of the JAX layer on the torch weights."""
    import jax
    import jax.numpy as jnp

    from hybridc_jax.model import kind_module

    mod = kind_module(kind)
    params = {k: jnp.asarray(v.detach().numpy()) for k, v in torch_layer.state_dict().items()}
    fwd = jax.jit(lambda p, x: mod.apply(p, x, spec)[0])
    grad = jax.jit(jax.grad(lambda p, x: mod.apply(p, x, spec)[0].sum(), argnums=(0, 1)))
    return params, fwd, grad


def jax_timed(fn, params, x, reps):
    import jax

    t = time.perf_counter()
    jax.block_until_ready(fn(params, x))
    compile_s = time.perf_counter() - t
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        jax.block_until_ready(fn(params, x))
        best = min(best, time.perf_counter() - t)
    return best, compile_s


def fmt_row(name, L, f, fb, mem, rf, rfb):
    tok = B * L
    cell = lambda s: "-" if s is None else f"{s * 1e3:.1f}"                 # noqa: E731
    tps = lambda s: "-" if s is None else f"{tok / s:,.0f}"                 # noqa: E731
    return (f"| {name} | {L} | {cell(f)} | {tps(f)} | {cell(fb)} | {tps(fb)} | {'-' if mem is None else f'{mem:.0f}'}"
            f" | {rf} | {rfb} |")


def bench_length(L, kinds, sp, reps, use_jax):
    print(f"\n### L = {L}\n")
    print("| layer | L | fwd ms | fwd tok/s | f+b ms | f+b tok/s | f+b peak MiB | ours faster: fwd | f+b |")
    print("|---|---|---|---|---|---|---|---|---|")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(B, L, DIM, generator=g).requires_grad_()
    base = {}
    for kind in ["attn"] + [k for k in kinds if k != "attn"]:
        layer, fn, params = ours(kind, sp[kind])
        f, _ = timed(fn, x, params, reps, False)
        fb, mem = timed(fn, x, params, reps, True)
        base[kind] = (f, fb)
        vs = "" if kind == "attn" else f" (attn/ours {base['attn'][0] / f:.1f}x, {base['attn'][1] / fb:.1f}x)"
        print(fmt_row(f"**{kind}** ours{vs}", L, f, fb, mem, "", ""))
        for name, factory, fwd_only in comparisons(kind):
            try:
                cfn, cparams = factory()
            except ImportError as e:
                print(f"| {name} | {L} | (not installed: {e.name}) | | | | | | |")
                continue
            cf, _ = timed(cfn, x, cparams, 1 if fwd_only else reps, False)
            cfb, cmem = (None, None) if fwd_only else timed(cfn, x, cparams, reps, True)
            print(fmt_row(name, L, cf, cfb, cmem, f"{cf / f:.1f}x", "-" if cfb is None else f"{cfb / fb:.1f}x"))
        if use_jax:
            params_j, jf, jg = jax_layer(kind, sp[kind], layer)
            xj = x.detach().numpy()
            jfs, cf = jax_timed(jf, params_j, xj, reps)
            jfbs, cfb = jax_timed(jg, params_j, xj, reps)
            print(fmt_row(f"JAX (compile {cf:.1f} s / {cfb:.1f} s)", L, jfs, jfbs, None,
                          f"JAX/torch {jfs / f:.2f}", f"{jfbs / fb:.2f}"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lengths", type=int, nargs="+", default=[1024, 4096])
    ap.add_argument("--kinds", nargs="+", default=KINDS, choices=KINDS)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-jax", action="store_true")
    opts = ap.parse_args()
    torch.set_num_threads(opts.threads)
    warnings.simplefilter("ignore")
    use_jax = not opts.no_jax
    if use_jax:
        import jax
        jax_v = f", jax {jax.__version__} ({jax.default_backend()})"
    load = f", load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    print(f"torch {torch.__version__}{jax_v if use_jax else ''}, {opts.threads} threads, B={B}, d_model={DIM}, fp32{load}")
    t0 = time.perf_counter()
    sp = specs()
    for L in opts.lengths:
        bench_length(L, opts.kinds, sp, opts.reps, use_jax)
    print(f"\ntotal benchmark time {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
