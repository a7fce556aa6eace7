"""The norms of the model and of the layers that take the model-wide `norm` settings (docs/layers.md).

`make_norm(kind, dim, eps, zero_centered)`: LayerNorm (eps 1e-5) or RMSNorm (eps 1e-6) when eps is None, as torch's
nn.LayerNorm / nn.RMSNorm; zero-centred, the weight is stored as w (init 0) and applied as (1 + w), in fp32: Gemma's
and Qwen3-Next's RMSNorm (transformers' GemmaRMSNorm, Qwen3NextRMSNorm), Nemotron's LayerNorm1P (NemotronLayerNorm1P,
with a bias). Parameter names are `weight` (and `bias`) either way.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

EPS = {"layer": 1e-5, "rms": 1e-6}  # each norm's own eps when the model writes none


class ZeroCenteredNorm(nn.Module):
    """y = norm(x) * (1 + weight) (+ bias for LayerNorm), computed in fp32; weight init 0."""

    def __init__(self, kind: str, dim: int, eps: float):
        super().__init__()
        self.kind, self.eps = kind, eps
        self.weight = nn.Parameter(torch.zeros(dim))
        if kind == "layer":
            self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x):
        x32 = x.float()
        if self.kind == "layer":
            y = F.layer_norm(x32, x.shape[-1:], 1.0 + self.weight.float(), self.bias.float(), self.eps)
        else:
            y = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps) * (1.0 + self.weight.float())
        return y.type_as(x)

    def extra_repr(self) -> str:
        return f"{self.kind}, {tuple(self.weight.shape)}, eps={self.eps}, zero_centered"


def make_norm(kind: str, dim: int, eps: float | None = None, zero_centered: bool = False) -> nn.Module:
    """kind "layer" or "rms" over the last `dim` channels."""
    eps = EPS[kind] if eps is None else eps
    if zero_centered:
        return ZeroCenteredNorm(kind, dim, eps)
    return nn.LayerNorm(dim, eps=eps) if kind == "layer" else nn.RMSNorm(dim, eps=eps)
