"""torch side of Hugging Face checkpoints (`hybridc.load_hf_weights`, `hybridc.save_hf`): the array adapter the
family conversions run on, and loading tensor by tensor into a built module (hybridc/hf/__init__.py)."""
from __future__ import annotations

import warnings

import numpy as np
import torch

from hybridc.hf.convert import XP

DTYPES = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16, "F64": torch.float64}
TAGS = {v: k for k, v in DTYPES.items()}


class TorchXP(XP):
    def shape(self, t):
        return tuple(t.shape)

    def split(self, t, sizes, axis):
        return list(torch.split(t, list(sizes), dim=axis))

    def cat(self, ts, axis):
        return torch.cat(list(ts), dim=axis)

    def permute(self, t, axes):
        return t.permute(*axes)

    def reshape(self, t, shape):
        return t.reshape(shape)

    def take(self, t, index, axis):
        return torch.index_select(t, axis, torch.tensor(index, dtype=torch.long))

    def add(self, t, c):
        return t + c

    def mul(self, t, c):
        return t * c


class _Sink:
    """Copies each converted tensor into the module's own parameter (no second copy of the model in memory)."""

    def __init__(self, net, tag: str):
        self.net = net.to(DTYPES[tag]) if tag in DTYPES else net
        self.named = dict(net.named_parameters()) | dict(net.named_buffers())

    def put(self, name, t):
        with torch.no_grad():
            self.named[name].copy_(t)

    def done(self):
        return self.net


class TorchSide:
    xp = TorchXP()

    def shapes(self, net) -> dict:
        named = dict(net.named_parameters()) | dict(net.named_buffers())
        return {k: tuple(v.shape) for k, v in named.items()}

    def from_checkpoint(self, arr, tag: str):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # a read-only memory map: we only read it
            t = torch.from_numpy(arr)
        return t.view(torch.bfloat16) if tag == "BF16" else t

    def loader(self, net, tag: str):
        return _Sink(net, tag)

    def named(self, net) -> dict:
        return {k: v.detach() for k, v in (dict(net.named_parameters()) | dict(net.named_buffers())).items()}

    def dtype_tag(self, tensors: dict) -> str:
        by = {}
        for t in tensors.values():
            if t.is_floating_point():
                by[t.dtype] = by.get(t.dtype, 0) + t.numel()
        return TAGS.get(max(by, key=by.get), "F32") if by else "F32"

    def to_bits(self, t, tag: str):
        t = t.detach().cpu()
        if not t.is_floating_point():
            return t.numpy()
        t = t.to(DTYPES[tag]).contiguous()
        if tag == "BF16":
            return (t.view(torch.int16).numpy().view(np.uint16), "BF16")
        return t.numpy()


def model_shapes(model) -> dict:
    """Names and shapes of a model's tensors, built on the meta device (no memory)."""
    from hybridc_torch.model import HybridModel

    with torch.device("meta"):
        net = HybridModel(model)
    return TorchSide().shapes(net)


TorchSide.model_shapes = staticmethod(model_shapes)
