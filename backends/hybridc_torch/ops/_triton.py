"""Whether the Triton GPU kernels can run here: ``auto`` picks them for CUDA tensors only when triton imports."""
from __future__ import annotations

import functools
import importlib.util

__all__ = ["triton_available"]


@functools.lru_cache(maxsize=None)
def triton_available() -> bool:
    """Whether triton is installed (cached); never imports it."""
    return importlib.util.find_spec("triton") is not None
