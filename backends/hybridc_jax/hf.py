"""JAX side of Hugging Face checkpoints (`hybridc.load_hf_weights`, `hybridc.save_hf`): the array adapter the
family conversions run on, and a checkpoint's tensors as a params dict (hybridc/hf/__init__.py)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np

from hybridc.hf.convert import XP

DTYPES = {"F32": jnp.float32, "BF16": jnp.bfloat16, "F16": jnp.float16, "F64": jnp.float32}


class JaxXP(XP):
    """numpy on the host for the conversions (one tensor at a time); jnp only when a tensor is placed."""

    def shape(self, t):
        return tuple(t.shape)

    def split(self, t, sizes, axis):
        cuts = [sum(sizes[:i + 1]) for i in range(len(sizes) - 1)]
        return np.split(np.asarray(t), cuts, axis=axis)

    def cat(self, ts, axis):
        return np.concatenate([np.asarray(t) for t in ts], axis=axis)

    def permute(self, t, axes):
        return np.transpose(np.asarray(t), axes)

    def reshape(self, t, shape):
        return np.reshape(np.asarray(t), shape)

    def take(self, t, index, axis):
        return np.take(np.asarray(t), np.asarray(index), axis=axis)

    def add(self, t, c):
        t = np.asarray(t)
        return (t.astype(np.float32) + c).astype(t.dtype)

    def mul(self, t, c):
        t = np.asarray(t)
        return (t.astype(np.float32) * c).astype(t.dtype)


class _Sink:
    def __init__(self, tag: str):
        self.dtype = DTYPES.get(tag, jnp.float32)
        self.params = {}

    def put(self, name, t):
        """A private host copy in the target dtype, then onto the device: `jnp.asarray` of a memory-mapped array
        kept the map's pages alive beside the copy (2x the model in RSS where this is ~1.1x)."""
        t = np.asarray(t)
        floating = np.issubdtype(t.dtype, np.floating) or t.dtype == ml_dtypes.bfloat16
        self.params[name] = jax.device_put(np.array(t, dtype=np.dtype(self.dtype) if floating else t.dtype))

    def done(self):
        return self.params


class JaxSide:
    xp = JaxXP()

    def shapes(self, net) -> dict:
        return {k: tuple(v.shape) for k, v in jax.eval_shape(net.init, jax.random.PRNGKey(0)).items()}

    def from_checkpoint(self, arr, tag: str):
        return arr.view(ml_dtypes.bfloat16) if tag == "BF16" else arr

    def loader(self, net, tag: str):
        return _Sink(tag)

    def named(self, params: dict) -> dict:
        return dict(params)

    def dtype_tag(self, tensors: dict) -> str:
        by = {}
        for t in tensors.values():
            by[jnp.dtype(t.dtype)] = by.get(jnp.dtype(t.dtype), 0) + t.size
        best = max(by, key=by.get) if by else jnp.dtype(jnp.float32)
        return {jnp.dtype(jnp.bfloat16): "BF16", jnp.dtype(jnp.float16): "F16"}.get(best, "F32")

    def to_bits(self, t, tag: str):
        t = np.asarray(t)
        if not (np.issubdtype(t.dtype, np.floating) or t.dtype == ml_dtypes.bfloat16):
            return t
        t = t.astype({"F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16}[tag])
        return (t.view(np.uint16), "BF16") if tag == "BF16" else t


def model_shapes(model) -> dict:
    from .model import Config, init

    cfg = Config.from_ir(model)
    return {k: tuple(v.shape) for k, v in jax.eval_shape(lambda key: init(cfg, key), jax.random.PRNGKey(0)).items()}


JaxSide.model_shapes = staticmethod(model_shapes)
