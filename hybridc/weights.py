"""Weights across backends: one safetensors file serves torch and JAX (numpy in the middle).

Names are the torch backend's parameter names (`named_parameters`, so a shared layer's weights are stored once,
under the first position that uses them); shapes are torch's, Linear weights `(out, in)`. The JAX path never
imports torch.
"""
from __future__ import annotations

from pathlib import Path

from .errors import HybridcError


def _is_torch_module(obj) -> bool:
    return any(c.__module__.startswith("torch.nn") for c in type(obj).__mro__)


def to_numpy(obj) -> dict:
    """torch nn.Module or a dict of arrays (JAX params) -> {name: np.ndarray}."""
    import numpy as np

    if _is_torch_module(obj):
        named = list(obj.named_parameters()) + list(obj.named_buffers())
        return {k: v.detach().cpu().float().numpy() if v.is_floating_point() else v.detach().cpu().numpy() for k, v in named}
    if isinstance(obj, dict):
        return {k: np.asarray(v) for k, v in obj.items()}
    raise TypeError(f"save_weights takes a torch module or a dict of arrays, got {type(obj).__name__}")


def save_weights(obj, path) -> None:
    """Write a torch module's or a JAX params dict's weights to a safetensors file."""
    from safetensors.numpy import save_file

    save_file({k: v.copy(order="C") for k, v in to_numpy(obj).items()}, str(path))


def _read(path) -> dict:
    from safetensors.numpy import load_file

    if not Path(path).is_file():
        raise HybridcError(f"no such weights file: {path}")
    try:
        return load_file(str(path))
    except Exception as e:  # noqa: BLE001 -- safetensors raises its own error type (and OSError) for a bad file
        raise HybridcError(f"not a valid safetensors file ({e})",
                           source_name=str(path)) from None


def load_weights(obj_or_backend, path):
    """Load a safetensors file: into a torch module (returned, in place), or as a JAX params dict.

    `obj_or_backend` is a torch nn.Module, the string "jax" / a JAX model object (returns a dict of jnp arrays),
    or "numpy" (returns the raw arrays). Names and shapes must match exactly.
    """
    arrays = _read(path)
    if _is_torch_module(obj_or_backend):
        return _into_torch(obj_or_backend, arrays)
    if obj_or_backend == "numpy":
        return arrays
    if obj_or_backend == "jax" or hasattr(obj_or_backend, "init"):
        import jax.numpy as jnp

        if hasattr(obj_or_backend, "init"):
            _check_jax(obj_or_backend, arrays)
        return {k: jnp.asarray(v) for k, v in arrays.items()}
    raise TypeError("load_weights takes a torch module, 'jax', a JAX model, or 'numpy'")


def _into_torch(module, arrays: dict):
    import torch

    named = dict(module.named_parameters()) | dict(module.named_buffers())
    missing, extra = sorted(set(named) - set(arrays)), sorted(set(arrays) - set(named))
    if missing or extra:
        raise HybridcError(f"weights do not match the model: missing {missing[:5]}, unexpected {extra[:5]}")
    with torch.no_grad():
        for k, t in named.items():
            if tuple(arrays[k].shape) != tuple(t.shape):
                raise HybridcError(f"weight {k}: shape {tuple(arrays[k].shape)} in the file, {tuple(t.shape)} in the model")
            t.copy_(torch.from_numpy(arrays[k]))
    return module


def _check_jax(net, arrays: dict):
    import jax

    shapes = jax.eval_shape(net.init, jax.random.PRNGKey(0))
    missing, extra = sorted(set(shapes) - set(arrays)), sorted(set(arrays) - set(shapes))
    if missing or extra:
        raise HybridcError(f"weights do not match the model: missing {missing[:5]}, unexpected {extra[:5]}")
    for k, s in shapes.items():
        if tuple(arrays[k].shape) != tuple(s.shape):
            raise HybridcError(f"weight {k}: shape {tuple(arrays[k].shape)} in the file, {tuple(s.shape)} in the model")
