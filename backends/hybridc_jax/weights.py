"""JAX side of `hybridc.load_weights`: numpy arrays -> a params dict of jnp arrays, checked against a model.

Names and shapes are the torch backend's (`layers.3.mixer.in_proj.weight`, Linear weights `(out, in)`). The file
format itself (safetensors) is the core's (`hybridc/weights.py`).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from hybridc.errors import HybridcError


def load_arrays(net, arrays: dict) -> dict:
    """`arrays` as jnp arrays; with a model (`net.init`), names and shapes must match its params exactly."""
    if net is not None:
        shapes = jax.eval_shape(net.init, jax.random.PRNGKey(0))
        missing, extra = sorted(set(shapes) - set(arrays)), sorted(set(arrays) - set(shapes))
        if missing or extra:
            raise HybridcError(f"weights do not match the model: missing {missing[:5]}, unexpected {extra[:5]}")
        for k, s in shapes.items():
            if tuple(arrays[k].shape) != tuple(s.shape):
                raise HybridcError(f"weight {k}: shape {tuple(arrays[k].shape)} in the file, {tuple(s.shape)} in the model")
    return {k: jnp.asarray(v) for k, v in arrays.items()}
