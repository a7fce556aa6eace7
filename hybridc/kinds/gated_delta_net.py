"""`gated_delta_net`: Gated DeltaNet (Yang, Kautz & Hatamizadeh 2025, arXiv:2412.06464), as flash-linear-attention's
GatedDeltaNet layer. Megatron-LM's pattern symbol `G`.

Parameters: q/k (H*K, D), v (Hv*V, D), a_proj and b_proj (Hv, D), A_log and dt_bias (Hv,), q/k/v short convs (no
bias), o_norm (V,), o_proj (D, Hv*V), g_proj (Hv*V, D) with the gated output norm. Decode state: the conv windows and
the [K, V] state per value head (q and k are shared by the Hv/H value heads of a group, Qwen3-Next / fla's GVA).
neg_eigval (fla's allow_neg_eigval, Grazzi et al. 2025, arXiv:2411.12537) doubles beta: no parameters, no counted FLOPs.
Symbols: D model dim, H (key) heads, Hv value heads, K key head dim, V value head dim (v_head_dim, else expand_v * K).
"""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field

from . import _delta
from ._base import KindSpec, auto_field, positive_int


class GatedDeltaNetSpec(KindSpec):
    """Gated DeltaNet (Yang, Kautz & Hatamizadeh 2025), as flash-linear-attention's GatedDeltaNet layer."""

    kind: Literal["gated_delta_net"] = "gated_delta_net"
    heads: int = Field(4, ge=1, le=1024, description="number of (key) heads")
    v_heads: int = auto_field("value heads, a multiple of heads; q and k are shared within a group (auto: heads)",
                              ge=1, le=4096)
    head_dim: int = Field(64, ge=1, le=4096, description="key head size")
    expand_v: int = Field(2, ge=1, le=16, description="value head size = expand_v * head_dim")
    v_head_dim: Optional[int] = Field(None, ge=1, le=4096, description="value head size (wins over expand_v), or "
                                      "none: expand_v * head_dim")
    conv: int = Field(4, ge=1, le=64, description="short convolution width")
    gate: bool = Field(True, description="gated output norm")
    neg_eigval: bool = Field(False, description="beta = 2 sigmoid(b) in (0, 2): the transition I - beta k k^T may have "
                             "negative eigenvalues (fla's allow_neg_eigval)")

    SHOWN = ("heads", "head_dim")

    @classmethod
    def resolve(cls, options: dict, dim: int) -> dict:
        out = dict(options)
        heads = positive_int(cls.option(out, "heads"), "heads")
        _delta.head_dim_auto(out, heads, dim)
        if out.get("v_heads", "auto") == "auto":
            out["v_heads"] = heads
        if positive_int(out["v_heads"], "v_heads") % heads:
            raise ValueError(f"v_heads={out['v_heads']} is not a multiple of heads={heads} (valid: v_heads=N*{heads}, "
                             f"or auto)")
        if cls.option(out, "v_head_dim") is None:
            _delta.value_head_dim(positive_int(cls.option(out, "head_dim"), "head_dim"), cls.option(out, "expand_v"))
        positive_int(cls.option(out, "conv"), "conv", minimum=0)
        return out

    def _dims(self):
        H, Hv, K = self.heads, self.v_heads, self.head_dim
        V = self.v_head_dim or _delta.value_head_dim(K, self.expand_v)
        return H, Hv, K, V, H * K, Hv * V

    def params(self, dim: int) -> int:
        H, Hv, K, V, kd, vd = self._dims()
        n = dim * (2 * kd + vd) + 2 * dim * Hv + 2 * Hv               # q/k/v, a_proj, b_proj, A_log, dt_bias
        n += _delta.conv_channels(kd, vd) * self.conv + V + vd * dim  # short convs, o_norm, o_proj
        n += dim * vd if self.gate else 0                             # g_proj
        return n

    def state_numel(self, dim: int, context: int = 0, meta: int = 0) -> int:
        H, Hv, K, V, _, _ = self._dims()
        return _delta.state_numel(H, K, V, self.conv, v_heads=Hv)

    def flops(self, dim: int, context: int = 0, meta: int = 0) -> int:
        H, Hv, K, V, kd, vd = self._dims()
        mm = 2 * dim * (2 * kd + vd + 2 * Hv + vd) + (2 * dim * vd if self.gate else 0)
        conv = 2 * _delta.conv_channels(kd, vd) * self.conv
        rec = Hv * (7 * K * V + 2 * V)       # per value head: as delta_net + the decay multiply of S
        return mm + conv + rec
