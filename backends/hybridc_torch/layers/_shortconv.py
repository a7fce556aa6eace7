"""Depthwise causal short convolution with a decode state (shared by DeltaNet / Gated DeltaNet), run by
``_conv.causal_conv1d``.

Follows flash-linear-attention's ``fla.modules.ShortConvolution`` (an ``nn.Conv1d`` subclass: parameter ``weight``
(C, 1, W), optional ``bias`` (C,), ``nn.Conv1d``'s default init, optional SiLU), used by the DeltaNet family
(Yang et al. 2024, arXiv:2406.06484). Unlike fla (whose cache keeps W inputs) the decode state keeps exactly the
last W-1 inputs, channel-major like fla's cache:

    y_t = act(bias + sum_{j<W} weight[:, 0, j] * x_{t-W+1+j})        # zero history before t = 0

Dimension glossary:
    B batch, L sequence length, C channels, W kernel width.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._conv import causal_conv1d, causal_conv1d_step

__all__ = ["ShortConvolution"]


class ShortConvolution(nn.Conv1d):
    """Causal depthwise conv over (B, L, C) with state (B, C, W-1) holding the last W-1 inputs."""

    def __init__(self, channels: int, kernel_size: int, bias: bool = False, activation: str | None = "silu"):
        super().__init__(channels, channels, kernel_size, groups=channels, padding=0, bias=bias)
        if activation not in (None, "silu", "swish"):
            raise ValueError(f"ShortConvolution activation must be None, 'silu' or 'swish', got {activation!r}")
        self.activation = activation

    @property
    def width(self) -> int:
        return self.kernel_size[0]

    def init_state(self, batch_size: int, device=None, dtype=torch.float32) -> torch.Tensor:
        return torch.zeros(batch_size, self.in_channels, self.width - 1, device=device, dtype=dtype)  # (B, C, W-1)

    def _act(self, y: torch.Tensor) -> torch.Tensor:
        return F.silu(y) if self.activation is not None else y

    def forward(self, x: torch.Tensor, cache: torch.Tensor | None = None):
        """x (B, L, C); cache (B, C, W-1) or None (zeros). Returns (y (B, L, C), new cache (B, C, W-1))."""
        B, L, C = x.shape
        if cache is None:
            cache = self.init_state(B, device=x.device, dtype=x.dtype)  # (B, C, W-1)
        if L == 0:
            return x, cache
        y, new_cache = causal_conv1d(x.transpose(1, 2), self.weight[:, 0], self.bias, cache)  # (B, C, L), (B, C, W-1)
        return self._act(y.transpose(1, 2)), new_cache                  # (B, L, C)

    def step(self, x_t: torch.Tensor, cache: torch.Tensor):
        """x_t (B, C); cache (B, C, W-1). Returns (y_t (B, C), new cache (B, C, W-1)); cache is not mutated."""
        y, new_cache = causal_conv1d_step(x_t, self.weight[:, 0, :], self.bias, cache)   # (B, C), (B, C, W-1)
        return self._act(y), new_cache
