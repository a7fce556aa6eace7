"""JIT compile time of whole models in the JAX backend (forward, and forward+backward), on this CPU.

    python -m benchmarks.jax_compile

Prints, per model, the number of layers, parameters, and seconds to lower+compile `apply` and `grad(apply)`
for batch 2, length 256. The target is seconds, not minutes, for a 12-layer model (`preset minimal_attn`).
"""
from __future__ import annotations

import time

import jax
import jax.numpy as jnp

import hybridc

MODELS = {
    "minimal_attn (12 layers)": "preset minimal_attn",
    "nemotron_h (10 layers)": "preset nemotron_h",
    "12 mixed kinds": "layers mamba mamba2 gru rwkv delta_net gated_delta_net griffin_lru attn mlp mamba|attn rwkv attn",
}


def compile_seconds(text: str) -> tuple[int, int, float, float]:
    m = hybridc.load(text)
    net = hybridc.build(m, backend="jax")
    params = jax.jit(net.init)(jax.random.PRNGKey(0))
    x = jnp.zeros((2, 256, m.input))
    t = time.perf_counter()
    jax.jit(net.apply).lower(params, x).compile()
    t1 = time.perf_counter()
    jax.jit(jax.grad(lambda p: net.apply(p, x).sum())).lower(params).compile()
    t2 = time.perf_counter()
    return len(m.layers), sum(int(v.size) for v in params.values()), t1 - t, t2 - t1


def main() -> None:
    print(f"jax {jax.__version__}, backend {jax.default_backend()}")
    print(f"{'model':28s} {'layers':>6s} {'params':>10s} {'fwd compile s':>14s} {'fwd+bwd compile s':>18s}")
    for name, text in MODELS.items():
        n, p, f, g = compile_seconds(text)
        print(f"{name:28s} {n:6d} {p:10,d} {f:14.2f} {g:18.2f}")


if __name__ == "__main__":
    main()
