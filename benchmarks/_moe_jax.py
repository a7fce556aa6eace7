"""The JAX rows of `benchmarks/moe.py --jax`: `hybridc_jax.layers.moe` at the torch layer's weights and input.

Forward (jitted `apply`) and forward+backward (jitted `grad` of sum(y) w.r.t. the input and every parameter), min over
`reps` after one compiling call; on CPU the grouped products run as the tiled loop (`hybridc_jax.ops.grouped_matmul`).
"""
from __future__ import annotations

import time
from types import SimpleNamespace


def _spec(weights: dict) -> SimpleNamespace:
    """The benchmark's spec (SwiGLU experts, softmax router, renorm) read off the weights' shapes."""
    from .moe import K

    e, f2, _ = weights["experts.gate_up_proj"].shape
    return SimpleNamespace(experts=e, top_k=K, hidden=f2 // 2, mult=4.0, act="swiglu", gated=False, bias=False,
                           shared_experts=0, shared_hidden=None, shared_gate=False, router="softmax", renorm=True,
                           gate_scale=1.0, down_scale=1.0)


def _best(fn, reps: int) -> float:
    fn()  # compile
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def rows(weights: dict, x, reps: int) -> list[tuple[str, float, float]]:
    """[(label, forward seconds, forward+backward seconds)] for the JAX layer."""
    import jax
    import jax.numpy as jnp

    from hybridc_jax.layers import moe

    spec = _spec(weights)
    params = {k: jnp.asarray(v) for k, v in weights.items()}
    xj = jnp.asarray(x)
    fwd = jax.jit(lambda p, x: moe.apply(p, x, spec)[0])
    grad = jax.jit(jax.grad(lambda p, x: jnp.sum(moe.apply(p, x, spec)[0]), (0, 1)))
    f = _best(lambda: jax.block_until_ready(fwd(params, xj)), reps)
    b = _best(lambda: jax.block_until_ready(grad(params, xj)), reps)
    return [(f"jax ({jax.default_backend()}, tiled)", f, b)]
