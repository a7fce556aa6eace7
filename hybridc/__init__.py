"""hybridc: a compiler for hybrid SSM/attention sequence models.

    >>> import hybridc
    >>> m = hybridc.load("10 layers ratio 9:1 backbone mamba; parallel meta_tokens=4")
    >>> m.schedule[-1]
    'mamba|attn'

The core imports neither torch nor jax; backends are found through the entry-point group `hybridc.backends`.
Names are imported on first use, so `hybridc describe` starts fast.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "load": "hybridc.resolve", "load_file": "hybridc.api", "dumps": "hybridc.canonical", "describe": "hybridc.api",
    "build": "hybridc.api", "backends": "hybridc.api", "save_weights": "hybridc.weights", "load_weights": "hybridc.weights",
    "load_hf": "hybridc.hf", "load_hf_weights": "hybridc.hf", "save_hf": "hybridc.hf", "import_hf": "hybridc.hf",
    "Model": "hybridc.ir", "Layer": "hybridc.ir", "HybridcError": "hybridc.errors", "BackendError": "hybridc.errors",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'hybridc' has no attribute {name!r}")


def __dir__():
    return __all__
