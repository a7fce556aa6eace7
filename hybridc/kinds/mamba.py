"""`mamba`: Mamba-1's selective SSM block (Gu & Dao 2023, arXiv:2312.00752), as mamba_ssm's `Mamba`.

Parameters (docs/layers.md): in_proj (2E, D), conv1d (E, 1, K) + bias, x_proj (R + 2N, E), dt_proj (E, R) + bias,
A_log (E, N), D (E,), out_proj (D, E). Decode state: the conv window (E, K-1) and the SSM state (E, N).
Symbols: D model dim, E inner dim (expand * D), N state size, R dt_rank, K conv width.
"""
from __future__ import annotations

import math
from typing import Literal

from pydantic import Field

from ._base import KindSpec, auto_field, positive_int, scaled_width


class MambaSpec(KindSpec):
    """Mamba-1 selective SSM (Gu & Dao 2023), as mamba_ssm's `Mamba`."""

    kind: Literal["mamba"] = "mamba"
    state: int = Field(16, ge=1, le=1024, description="SSM state size N")
    expand: int = Field(2, ge=1, le=16, description="d_inner = expand * dim")
    conv: int = Field(4, ge=1, le=64, description="causal depthwise conv width")
    dt_rank: int = auto_field("rank of the dt projection (auto: ceil(dim/16))", ge=1, le=65536)

    SHOWN = ("state", "expand")

    @classmethod
    def resolve(cls, options: dict, dim: int) -> dict:
        out = dict(options)
        if out.get("dt_rank") == "auto":
            out["dt_rank"] = math.ceil(dim / 16)
        for name in ("state", "conv", "dt_rank"):
            if name in out:
                positive_int(out[name], name)
        scaled_width(cls.option(out, "expand"), dim)
        return out

    def _dims(self, dim: int):
        return int(self.expand * dim), self.state, self.dt_rank, self.conv

    def params(self, dim: int) -> int:
        E, N, R, K = self._dims(dim)
        # in_proj + conv1d (w, b) + x_proj + dt_proj (w, b) + A_log + D + out_proj
        return dim * 2 * E + E * K + E + E * (R + 2 * N) + R * E + E + E * N + E + E * dim

    def state_numel(self, dim: int, context: int = 0, meta: int = 0) -> int:
        E, N, _, K = self._dims(dim)
        return E * (K - 1) + E * N  # conv window + ssm state

    def flops(self, dim: int, context: int = 0, meta: int = 0) -> int:
        E, N, R, K = self._dims(dim)
        matmuls = 2 * dim * 2 * E + 2 * E * (R + 2 * N) + 2 * R * E + 2 * E * dim
        conv = 2 * E * K + E + E          # taps + bias + silu
        dt = 2 * E                        # bias + softplus
        # per (e, n): dt*A, exp, dt*u*B (1 mul, dt*u shared), h update (1 madd = 2), C.h (1 madd = 2)
        scan = 7 * E * N + E
        gate = 2 * E + E + E              # D skip (madd) + silu(z) + product
        return matmuls + conv + dt + scan + gate
