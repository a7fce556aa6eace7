"""The numpy side of checkpoint conversion (no framework): a checkpoint as a hybridc weights file, and a weights
file as a checkpoint (`hybridc import-hf --weights`, `hybridc export-hf`). Arrays are float32 in between."""
from __future__ import annotations

import numpy as np

from ..errors import HybridcError
from .checkpoint import as_float32
from .convert import NumpyXP


def to_bits(arr, tag: str):
    """float array -> what `write_safetensors` takes for dtype `tag` (bf16: round-to-nearest-even uint16 bits)."""
    if tag == "F32":
        return np.asarray(arr, dtype=np.float32)
    if tag == "F16":
        return np.asarray(arr, dtype=np.float16)
    if tag == "BF16":
        bits = np.ascontiguousarray(arr, dtype=np.float32).view(np.uint32)
        rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
        nan = np.isnan(arr)
        return (np.where(nan, 0x7FC0, rounded).astype(np.uint16), "BF16")
    raise ValueError(tag)


class NumpySide:
    xp = NumpyXP()

    def from_checkpoint(self, arr, tag: str):
        return as_float32(arr, tag) if tag in ("BF16", "F16", "F64", "F32") else np.asarray(arr)

    def named(self, arrays: dict) -> dict:
        return dict(arrays)

    def dtype_tag(self, arrays: dict) -> str:
        return "F32"

    def to_bits(self, t, tag: str):
        return to_bits(t, tag)

    def model_shapes(self, model) -> dict:
        """hybridc's tensor names and shapes for `model`, from an installed backend without allocating weights
        (torch on the meta device, else JAX's eval_shape)."""
        from .. import registry

        usable = registry.backends()
        for name in ("torch", "jax"):
            if usable.get(name):
                return registry.get(name).hf().model_shapes(model)
        raise HybridcError("converting a checkpoint's tensors needs a backend to name them: "
                           "pip install 'hybridc[torch]' or 'hybridc[jax]'")
