"""The one place a kernel entry point turns `impl=` into an implementation (rules shared with the JAX backend in
`hybridc_native.choice`: an explicit impl=, then HYBRIDC_KERNEL, then the entry point's auto)."""
from __future__ import annotations

import functools
import importlib.util

from hybridc_native.choice import ENV, KNOWN, choose, forced, resolve

__all__ = ["ENV", "KNOWN", "choose", "forced", "resolve", "triton_available"]


@functools.lru_cache(maxsize=None)
def triton_available() -> bool:
    """Whether triton is installed (cached): ``auto`` picks the Triton kernels for CUDA tensors only then."""
    return importlib.util.find_spec("triton") is not None
