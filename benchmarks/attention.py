"""The attention layer on CPU: JAX's forms of causal attention (hybridc_jax/ops/attention) against torch's SDPA layer.

    python -m benchmarks.attention [--lengths 1024 4096] [--window N] [--rounds 3] [--threads 2]

The layer `dim 256; layers attn(heads=4, window=none)` (head_dim 64, QK-norm, no RoPE), batch 2, fp32: torch's layer
(F.scaled_dot_product_attention, is_causal: its CPU flash kernel) and the JAX layer on the same weights, jitted, with
each attention form forced through HYBRIDC_KERNEL=attention=<form>:
    block      blockwise online softmax over the key blocks a query block sees (what `auto` picks), custom VJP
    xla        jax.nn.dot_product_attention(implementation="xla"): the dense masked form inside JAX
    reference  the dense [L, L] masked form the layer ran before
Then the attention alone on (B, H, L, 64) q, k, v: torch's F.scaled_dot_product_attention(is_causal=True) (a window:
its boolean mask) against each JAX form. Forward (no grad) and forward+backward (jax.grad / .backward() of the
output's sum; the layer: gradients of the input and every parameter). The machine is shared: every form is timed
once per round, interleaved, for --rounds rounds, and the minimum wall and process CPU time are kept (CPU time
counts both cores and suffers less from other processes); the load average is printed before and after. Ratios:
JAX time / torch time (< 1: JAX faster).
"""
from __future__ import annotations

import argparse
import os
import time
import warnings

import torch

import hybridc
from hybridc_torch.model import make_mixer

B, DIM, HEADS = 2, 256, 4
FORMS = ["block", "xla", "reference"]


def spec(window: int | None):
    text = f"dim {DIM}\nlayers attn(heads={HEADS}, window={'none' if window is None else window})\n"
    return hybridc.load(text).layers[0].mixers[0]


def torch_fns(layer, x):
    """(forward, forward+backward) closures of the torch layer on x (B, L, D)."""
    xg = x.clone().requires_grad_()

    def fwd():
        with torch.no_grad():
            layer(x)

    def fb():
        xg.grad = None
        for p in layer.parameters():
            p.grad = None
        layer(xg)[0].sum().backward()
    return fwd, fb


def jax_fns(sp, layer, x, form):
    """(forward, forward+backward, compile seconds) of the JAX layer with `form` on the torch layer's weights."""
    import jax
    import jax.numpy as jnp

    from hybridc_jax.layers import attn

    params = {k: jnp.asarray(v.detach().numpy()) for k, v in layer.state_dict().items()}
    xj = jnp.asarray(x.numpy())
    os.environ["HYBRIDC_KERNEL"] = f"attention={form}"  # read when the jitted function traces, below
    try:
        f = jax.jit(lambda p, x: attn.apply(p, x, sp)[0])
        g = jax.jit(jax.grad(lambda p, x: attn.apply(p, x, sp)[0].sum(), argnums=(0, 1)))
        t = time.perf_counter()
        jax.block_until_ready(f(params, xj))
        jax.block_until_ready(g(params, xj))
        compile_s = time.perf_counter() - t
    finally:
        del os.environ["HYBRIDC_KERNEL"]
    return (lambda: jax.block_until_ready(f(params, xj))), (lambda: jax.block_until_ready(g(params, xj))), compile_s


def op_fns(sp, length, form):
    """The attention op alone, q (B, H, L, E), k, v: torch F.scaled_dot_product_attention(is_causal) or the JAX form."""
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(B, HEADS, length, sp.head_dim, generator=g) for _ in range(3))
    if form == "torch":
        qg, kg, vg = (a.clone().requires_grad_() for a in (q, k, v))
        sdpa = torch.nn.functional.scaled_dot_product_attention
        win = None if sp.window is None else attention_mask(length, sp.window)

        def fwd():
            with torch.no_grad():
                sdpa(q, k, v, is_causal=win is None, attn_mask=win)

        def fb():
            for a in (qg, kg, vg):
                a.grad = None
            sdpa(qg, kg, vg, is_causal=win is None, attn_mask=win).sum().backward()
        return fwd, fb, None
    import jax
    import jax.numpy as jnp

    from hybridc_jax.ops.attention import attention

    qj, kj, vj = (jnp.asarray(a.numpy()) for a in (q, k, v))
    fn = lambda q, k, v: attention(q, k, v, sp.head_dim ** -0.5, None, sp.window, impl=form)  # noqa: E731
    f, g = jax.jit(fn), jax.jit(jax.grad(lambda q, k, v: fn(q, k, v).sum(), argnums=(0, 1, 2)))
    t = time.perf_counter()
    jax.block_until_ready((f(qj, kj, vj), g(qj, kj, vj)))
    compile_s = time.perf_counter() - t
    return (lambda: jax.block_until_ready(f(qj, kj, vj))), (lambda: jax.block_until_ready(g(qj, kj, vj))), compile_s


def attention_mask(length: int, window: int):
    i = torch.arange(length)
    return (i[None, :] <= i[:, None]) & (i[:, None] - i[None, :] < window)


def race(fns: dict, rounds: int) -> dict:
    """name -> [(fwd wall, fwd CPU), (fb wall, fb CPU)] seconds, each the min over rounds (interleaved)."""
    best = {name: [[float("inf")] * 2, [float("inf")] * 2] for name in fns}
    for fwd, fb, _ in fns.values():  # warm-up (JAX: compiled already)
        fwd(), fb()
    for _ in range(rounds):
        for name, (fwd, fb, _) in fns.items():
            for i, fn in enumerate((fwd, fb)):
                t, c = time.perf_counter(), time.process_time()
                fn()
                cell = best[name][i]
                cell[0], cell[1] = min(cell[0], time.perf_counter() - t), min(cell[1], time.process_time() - c)
    return best


def table(title: str, fns: dict, best: dict, base: str) -> None:
    (tf, tfc), (tfb, tfbc) = best[base]
    print(f"\n{title}: min of the rounds, ms wall (CPU ms of both cores)")
    print("| form | forward | fwd+bwd | fwd ratio | fwd+bwd ratio | JAX compile s |\n|---|---|---|---|---|---|")
    for name, ((f, fc), (fb, fbc)) in best.items():
        c = fns[name][2]
        print(f"| {name} | {f * 1e3:.1f} ({fc * 1e3:.0f}) | {fb * 1e3:.1f} ({fbc * 1e3:.0f}) "
              f"| {f / tf:.2f} ({fc / tfc:.2f}) | {fb / tfb:.2f} ({fbc / tfbc:.2f}) "
              f"| {'-' if c is None else f'{c:.1f}'} |", flush=True)


def bench(length: int, window: int | None, rounds: int) -> None:
    sp = spec(window)
    torch.manual_seed(0)
    layer = make_mixer(sp, DIM, "auto")
    x = torch.randn(B, length, DIM)
    fns = {"torch layer (SDPA)": (*torch_fns(layer, x), None)}
    for form in FORMS:
        fns[f"JAX layer, {form}"] = jax_fns(sp, layer, x, form)
    table(f"L={length}, window={window}, the layer", fns, race(fns, rounds), "torch layer (SDPA)")
    fns = {"torch SDPA": op_fns(sp, length, "torch")}
    for form in FORMS:
        fns[f"JAX {form}"] = op_fns(sp, length, form)
    table(f"L={length}, window={window}, attention alone (q, k, v given)", fns, race(fns, rounds), "torch SDPA")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lengths", type=int, nargs="+", default=[1024, 4096])
    ap.add_argument("--window", type=int, default=None)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--forms", nargs="+", default=FORMS, choices=FORMS)
    opts = ap.parse_args()
    FORMS[:] = opts.forms
    torch.set_num_threads(opts.threads)
    warnings.simplefilter("ignore")
    import jax

    print(f"torch {torch.__version__}, jax {jax.__version__} ({jax.default_backend()}), {opts.threads} torch threads, "
          f"B={B}, dim {DIM}, {HEADS} heads x 64, fp32, load average {os.getloadavg()[0]:.1f} (2 cores)")
    for length in opts.lengths:
        bench(length, opts.window, opts.rounds)
    print(f"\nload average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
