"""JAX backend for hybridc: `hybridc.build(model, backend="jax")` returns a `JaxModel` of pure functions.

    net = hybridc.build(m, backend="jax")
    params = net.init(jax.random.PRNGKey(0))          # flat dict, torch state_dict names and shapes
    y = net.apply(params, x)                          # or (y, state) = net.apply(params, x, state)
    y_t, state = net.step(params, x_t, state)

Registered under the entry-point group `hybridc.backends` as `jax`. Plain pytrees: no Flax, no Equinox.
"""
from __future__ import annotations

import time

from . import model as _m
from .generate import generate, jit_step

__all__ = ["backend", "build", "generate", "jit_step", "JaxModel"]


class JaxModel:
    """Pure functions over a static configuration; every method works under jit, grad and vmap."""

    def __init__(self, model):
        self.ir = model
        self.cfg = _m.Config.from_ir(model)

    def init(self, key) -> dict:
        return _m.init(self.cfg, key)

    def apply(self, params, x, state=None, *, key=None, train=False, start=None, return_aux=False):
        """`return_aux`: also the MoE layers' aux losses summed over layers (`(out, aux)`; aux None without MoE)."""
        return _m.apply(self.cfg, params, x, state, key=key, train=train, start=start, return_aux=return_aux)

    def init_state(self, batch_size: int, *, max_len: int | None = None, dtype=None):
        import jax.numpy as jnp

        return _m.init_state(self.cfg, batch_size, max_len=max_len, dtype=dtype or jnp.float32)

    def step(self, params, x_t, state):
        return _m.step(self.cfg, params, x_t, state)


def build(model, **options) -> JaxModel:
    if options:
        raise TypeError(f"the jax backend takes no build options, got {sorted(options)}")
    return JaxModel(model)


class _Backend:
    name = "jax"

    def build(self, model, **options):
        return build(model, **options)

    def emit(self, model) -> str:
        from .emit import emit

        return emit(model)

    def kernels(self, model) -> list[dict]:
        """Per mixer kind: the recurrence and the kernel ``impl="auto"`` runs on each device (describe --kernels)."""
        from .plan import plan

        return plan(model)

    def hf(self):
        """The framework side of Hugging Face checkpoints (hybridc/hf: `load_hf_weights`, `save_hf`)."""
        from .hf import JaxSide

        return JaxSide()

    def load_weights(self, net, arrays: dict) -> dict:
        """numpy arrays as a params dict, checked against `net` when given (`hybridc.load_weights`)."""
        from .weights import load_arrays

        return load_arrays(net, arrays)

    def trainer(self, model, *, lr, warmup, steps, weight_decay, seed, betas=(0.9, 0.95), grad_clip=1.0,
                devices=None):
        """optax AdamW on the model's params: `step`, `evaluate`, `save`, `load` (train.py; `hybridc train`).
        `devices` N: on a mesh of N devices, batch and parameters sharded (sharding.py; `--devices N`)."""
        from .train import JaxTrainer

        if devices is not None:
            from .sharding import ShardedJaxTrainer

            return ShardedJaxTrainer(model, build=build, devices=devices, lr=lr, warmup=warmup, steps=steps,
                                     weight_decay=weight_decay, seed=seed, betas=betas, grad_clip=grad_clip)
        return JaxTrainer(model, build=build, lr=lr, warmup=warmup, steps=steps, weight_decay=weight_decay,
                          seed=seed, betas=betas, grad_clip=grad_clip)

    def check(self, model) -> dict:
        import jax
        import jax.numpy as jnp

        net = build(model)
        params = net.init(jax.random.PRNGKey(0))
        x = (jnp.zeros((2, 16), jnp.int32) if model.vocab is not None
             else jax.random.normal(jax.random.PRNGKey(1), (2, 16, model.input)))
        fn = jax.jit(net.apply)
        jax.block_until_ready(fn(params, x))  # compile
        t = time.perf_counter()
        y = jax.block_until_ready(fn(params, x))
        dt = time.perf_counter() - t
        return {"output_shape": tuple(y.shape), "params": sum(int(v.size) for v in params.values()), "seconds": dt}


backend = _Backend()
