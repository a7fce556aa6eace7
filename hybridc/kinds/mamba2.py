"""`mamba2`: Mamba-2 / SSD (Dao & Gu 2024, arXiv:2405.21060), as mamba_ssm's `Mamba2`.

Parameters (docs/layers.md): in_proj (E + X + H, D) giving [z, x, B, C, dt], conv1d (X, 1, K) + bias, dt_bias,
A_log, D (H,) each, the gated RMSNorm weight (E,), out_proj (D, E). Decode state: the conv window (X, K-1) and the
SSM state (H, P, N). Symbols: D model dim, E inner dim, H heads (E / P), P head_dim, N state size, G groups,
X conv channels (E + 2 G N), K conv width. Megatron-LM's pattern symbol `M`.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from ._base import KindSpec, positive_int, scaled_width


class Mamba2Spec(KindSpec):
    """Mamba-2 / SSD (Dao & Gu 2024), as mamba_ssm's `Mamba2`."""

    kind: Literal["mamba2"] = "mamba2"
    state: int = Field(128, ge=1, le=1024, description="SSM state size N")
    expand: int = Field(2, ge=1, le=16, description="d_inner = expand * dim")
    conv: int = Field(4, ge=1, le=64, description="causal depthwise conv width")
    head_dim: int = Field(64, ge=1, le=4096, description="channels per SSM head")
    groups: int = Field(1, ge=1, le=1024, description="B/C groups (ngroups)")
    chunk: int = Field(256, ge=1, le=65536, description="SSD chunk size")

    PATTERN = "M"
    SHOWN = ("state", "head_dim")

    @classmethod
    def resolve(cls, options: dict, dim: int) -> dict:
        out = dict(options)
        for name in ("state", "conv", "head_dim", "groups", "chunk"):
            if name in out:
                positive_int(out[name], name)
        E = scaled_width(cls.option(out, "expand"), dim)
        head_dim, groups = cls.option(out, "head_dim"), cls.option(out, "groups")
        if E % head_dim:
            raise ValueError(f"expand*dim={E} is not divisible by head_dim={head_dim}")
        if (E // head_dim) % groups:
            raise ValueError(f"number of heads {E // head_dim} (expand*dim/head_dim) is not divisible by "
                             f"groups={groups}")
        return out

    def _dims(self, dim: int):
        E = int(self.expand * dim)
        return E, E // self.head_dim, self.groups * self.state, self.conv

    def params(self, dim: int) -> int:
        E, H, GN, K = self._dims(dim)
        X = E + 2 * GN
        # in_proj [z, x, B, C, dt] + conv1d (w, b) + dt_bias + A_log + D + norm.weight + out_proj
        return dim * (E + X + H) + X * K + X + 3 * H + E + E * dim

    def state_numel(self, dim: int, context: int = 0, meta: int = 0) -> int:
        E, _, GN, K = self._dims(dim)
        return (E + 2 * GN) * (K - 1) + E * self.state  # conv window + (H, P, N) ssm state

    def flops(self, dim: int, context: int = 0, meta: int = 0) -> int:
        E, H, GN, K = self._dims(dim)
        X, N = E + 2 * GN, self.state
        matmuls = 2 * dim * (E + X + H) + 2 * E * dim
        conv = 2 * X * K + X + X          # taps + bias + silu
        dt = 2 * H + 2 * H                # bias + softplus, dt*A + exp
        # per (h, p, n): (dt*x)*B (1 mul), decay*S + . (1 madd = 2), C.S (1 madd = 2); per (h, p): dt*x
        scan = 5 * E * N + E
        tail = 2 * E + 2 * E + 4 * E      # D skip (madd), silu(z) * y, group RMSNorm (square-sum, scale, weight)
        return matmuls + conv + dt + scan + tail
