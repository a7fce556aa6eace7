"""The JAX rows of `benchmarks/moe.py --jax`: `hybridc_jax.layers.moe` at the torch layer's weights and input.

`layer_calls`: forward (jitted `apply`) and forward+backward (jitted `grad` of sum(y) w.r.t. the input and every
parameter), timed by benchmarks/moe.py in the same rounds as torch's; on CPU the grouped products run as the tiled
loops (`hybridc_jax.ops.grouped_matmul`).
`decoders`: the jitted one-token `step` (and the router's product alone) for the decoding rows.
"""
from __future__ import annotations

from types import SimpleNamespace


def _spec(weights: dict, top_k: int | None = None) -> SimpleNamespace:
    """The benchmark's spec (SwiGLU experts, softmax router, renorm) read off the weights' shapes (top-k: the layer
    rows' K unless given)."""
    from .moe import K

    e, f2, _ = weights["experts.gate_up_proj"].shape
    return SimpleNamespace(experts=e, top_k=top_k or K, hidden=f2 // 2, mult=4.0, act="swiglu", gated=False, bias=False,
                           shared_experts=0, shared_hidden=None, shared_gate=False, router="softmax", renorm=True,
                           gate_scale=1.0, down_scale=1.0)


def layer_calls(weights: dict, x) -> dict:
    """{label: (forward call, forward+backward call)} of the JAX layer, compiled (no-argument calls)."""
    import jax
    import jax.numpy as jnp

    from hybridc_jax.layers import moe

    spec = _spec(weights)
    params = {k: jnp.asarray(v) for k, v in weights.items()}
    xj = jnp.asarray(x)
    fwd = jax.jit(lambda p, x: moe.apply(p, x, spec)[0])
    grad = jax.jit(jax.grad(lambda p, x: jnp.sum(moe.apply(p, x, spec)[0]), (0, 1)))
    return {f"jax ({jax.default_backend()}, tiled)": (lambda: jax.block_until_ready(fwd(params, xj)),
                                                      lambda: jax.block_until_ready(grad(params, xj)))}


def decoders(weights: dict, x, top_k: int) -> dict:
    """{label: a no-argument call}: the jitted `step` of the JAX layer on x (B, D), and its router's product alone."""
    import jax
    import jax.numpy as jnp

    from hybridc_jax.layers import moe

    spec = _spec(weights, top_k)
    params = {k: jnp.asarray(v) for k, v in weights.items()}
    xj = jnp.asarray(x)
    step = jax.jit(lambda p, x: moe.step(p, x, spec, {})[0])
    router = jax.jit(moe._router_logits)
    return {"jax step": lambda: jax.block_until_ready(step(params, xj)),
            "jax router": lambda: jax.block_until_ready(router(params, xj))}
