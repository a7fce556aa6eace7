"""torch side of `hybridc.save_weights` / `hybridc.load_weights`: a module's tensors <-> numpy arrays.

Names are `named_parameters()` then `named_buffers()` (a shared layer's weights once, under its first position);
shapes are torch's. The file format itself (safetensors) is the core's (`hybridc/weights.py`).
"""
from __future__ import annotations

import torch

from hybridc.errors import HybridcError


def to_numpy(module) -> dict:
    named = list(module.named_parameters()) + list(module.named_buffers())
    return {k: (v.detach().cpu().float() if v.is_floating_point() else v.detach().cpu()).numpy() for k, v in named}


def load_arrays(module, arrays: dict):
    """Copy `arrays` into `module` in place (names and shapes must match exactly); returns the module."""
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
