"""LFM2's gated short convolution (``short_conv``).

Reference implementation: transformers' ``Lfm2ShortConv`` (models/lfm2/modeling_lfm2.py), Liquid AI's LFM2; the
parameter names and shapes are its own (``in_proj``, ``conv``, ``out_proj``), so its weights load 1:1:
    [B, C, x] = in_proj(u)                   # (B, L, D) each, in that order
    y = out_proj(C * conv(B * x))            # conv: depthwise, causal, width K, no activation
``bias`` (LFM2's ``conv_bias``) puts a bias on all three. The conv is ``_shortconv.ShortConvolution`` (activation
None); the decode state holds the last K-1 inputs of the conv, B * x, channel-major (B, D, K-1).

Glossary of dimension letters:
    B: batch    L: sequence length    D: model dim    K: conv width
"""
from __future__ import annotations

import torch
from torch import nn

from ._shortconv import ShortConvolution

__all__ = ["ShortConv", "LAYER", "KERNEL"]


class ShortConv(nn.Module):
    """Gated short convolution. spec: conv (K), bias."""

    def __init__(self, dim: int, spec, *, impl: str = "auto"):
        super().__init__()
        if impl not in ("auto", "reference"):
            raise ValueError(f"unknown short_conv impl {impl!r}; valid: ['auto', 'reference']")
        self.dim, self.width = dim, int(spec.conv)
        # Lfm2ShortConv's construction order: conv, in_proj, out_proj.
        self.conv = ShortConvolution(dim, self.width, bias=spec.bias, activation=None)
        self.in_proj = nn.Linear(dim, 3 * dim, bias=spec.bias)
        self.out_proj = nn.Linear(dim, dim, bias=spec.bias)

    def init_state(self, batch_size: int, device=None, dtype=torch.float32) -> dict[str, torch.Tensor]:
        return {"conv": self.conv.init_state(batch_size, device=device, dtype=dtype)}  # (B, D, K-1)

    def forward(self, x, state=None, ctx=None):
        b, c, v = self.in_proj(x).chunk(3, dim=-1)  # (B, L, D) each
        y, conv_state = self.conv(b * v, None if state is None else state["conv"])  # (B, L, D), (B, D, K-1)
        out = self.out_proj(c * y)  # (B, L, D)
        if state is None:
            return out, None
        return out, {"conv": conv_state.to(state["conv"].dtype)}

    def step(self, x_t, state, ctx=None):
        b, c, v = self.in_proj(x_t).chunk(3, dim=-1)  # (B, D) each
        y, conv_state = self.conv.step(b * v, state["conv"])  # (B, D), (B, D, K-1)
        return self.out_proj(c * y), {"conv": conv_state.to(state["conv"].dtype)}


LAYER = ShortConv
KERNEL = ("conv1d", "a depthwise causal conv, no recurrence")  # (`describe --kernels`: hybridc_torch.plan)
