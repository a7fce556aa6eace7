"""`gated_delta_net`: Gated DeltaNet (Yang, Kautz & Hatamizadeh 2025, arXiv:2412.06464), as flash-linear-attention's
GatedDeltaNet layer. Megatron-LM's pattern symbol `G`.

Parameters: q/k (H*K, D), v (H*V, D), a_proj and b_proj (H, D), A_log and dt_bias (H,), q/k/v short convs (no
bias), o_norm (V,), o_proj (D, H*V), g_proj (H*V, D) with the gated output norm. Decode state: the conv windows and
the [K, V] state per head. Symbols: D model dim, H heads, K key head dim, V value head dim (expand_v * K).
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from . import _delta
from ._base import KindSpec, positive_int


class GatedDeltaNetSpec(KindSpec):
    """Gated DeltaNet (Yang, Kautz & Hatamizadeh 2025), as flash-linear-attention's GatedDeltaNet layer."""

    kind: Literal["gated_delta_net"] = "gated_delta_net"
    heads: int = Field(4, ge=1, le=1024, description="number of heads")
    head_dim: int = Field(64, ge=1, le=4096, description="key head size")
    expand_v: int = Field(2, ge=1, le=16, description="value head size = expand_v * head_dim")
    conv: int = Field(4, ge=1, le=64, description="short convolution width")
    gate: bool = Field(True, description="gated output norm")

    PATTERN = "G"
    SHOWN = ("heads", "head_dim")

    @classmethod
    def resolve(cls, options: dict, dim: int) -> dict:
        out = dict(options)
        _delta.head_dim_auto(out, positive_int(cls.option(out, "heads"), "heads"), dim)
        _delta.value_head_dim(positive_int(cls.option(out, "head_dim"), "head_dim"), cls.option(out, "expand_v"))
        positive_int(cls.option(out, "conv"), "conv", minimum=0)
        return out

    def _dims(self):
        H, K = self.heads, self.head_dim
        V = _delta.value_head_dim(K, self.expand_v)
        return H, K, V, H * K, H * V

    def params(self, dim: int) -> int:
        H, K, V, kd, vd = self._dims()
        n = dim * (2 * kd + vd) + 2 * dim * H + 2 * H                 # q/k/v, a_proj, b_proj, A_log, dt_bias
        n += _delta.conv_channels(kd, vd) * self.conv + V + vd * dim  # short convs, o_norm, o_proj
        n += dim * vd if self.gate else 0                             # g_proj
        return n

    def state_numel(self, dim: int, context: int = 0, meta: int = 0) -> int:
        H, K, V, _, _ = self._dims()
        return _delta.state_numel(H, K, V, self.conv)

    def flops(self, dim: int, context: int = 0, meta: int = 0) -> int:
        H, K, V, kd, vd = self._dims()
        mm = 2 * dim * (2 * kd + vd + 2 * H + vd) + (2 * dim * vd if self.gate else 0)
        conv = 2 * _delta.conv_channels(kd, vd) * self.conv
        rec = H * (7 * K * V + 2 * V)        # as delta_net + the decay multiply of S
        return mm + conv + rec
