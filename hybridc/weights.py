"""Weights across backends: one safetensors file serves torch and JAX (numpy in the middle).

Names are the torch backend's parameter names (`named_parameters`, so a shared layer's weights are stored once,
under the first position that uses them); shapes are torch's, Linear weights `(out, in)`. This module owns the file
format and imports only numpy and safetensors; the framework side of each backend (`<backend>/weights.py`) is
reached through the backend registry.
"""
from __future__ import annotations

from pathlib import Path

from . import registry
from .errors import HybridcError


def _is_torch_module(obj) -> bool:
    return any(c.__module__.startswith("torch.nn") for c in type(obj).__mro__)


def to_numpy(obj) -> dict:
    """torch nn.Module or a dict of arrays (JAX params) -> {name: np.ndarray}."""
    import numpy as np

    if _is_torch_module(obj):
        return registry.get("torch").weights_to_numpy(obj)
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
        raise HybridcError(f"not a valid safetensors file ({e})", source_name=str(path)) from None


def load_weights(obj_or_backend, path):
    """Load a safetensors file: into a torch module (returned, in place), or as a JAX params dict.

    `obj_or_backend` is a torch nn.Module, the string "jax" / a JAX model object (returns a dict of jnp arrays),
    or "numpy" (returns the raw arrays). Names and shapes must match exactly.
    """
    arrays = _read(path)
    if _is_torch_module(obj_or_backend):
        return registry.get("torch").load_weights(obj_or_backend, arrays)
    if isinstance(obj_or_backend, str) and obj_or_backend == "numpy":
        return arrays
    if isinstance(obj_or_backend, str) and obj_or_backend == "jax":
        return registry.get("jax").load_weights(None, arrays)
    if hasattr(obj_or_backend, "init"):
        return registry.get("jax").load_weights(obj_or_backend, arrays)
    raise TypeError("load_weights takes a torch module, 'jax', a JAX model, or 'numpy'")
