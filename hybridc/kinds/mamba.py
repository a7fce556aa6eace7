"""`mamba`: Mamba-1's selective SSM block (Gu & Dao 2023, arXiv:2312.00752), as mamba_ssm's `Mamba`.

Parameters (docs/layers.md): in_proj (2E, D) (+ bias with proj_bias), conv1d (E, 1, K) (+ bias with conv_bias),
x_proj (R + 2N, E), dt_proj (E, R) + bias, A_log (E, N), D (E,), out_proj (D, E) (+ bias with proj_bias), and with
inner_norm=weighted the RMSNorm weights dt_layernorm (R,), b_layernorm (N,), c_layernorm (N,) (Jamba's; plain:
FalconMamba's weightless norms). With heads H > 1 (Zamba-7B's multi-head Mamba, transformers' ZambaMambaMixer)
x_proj and dt_proj are per head: x_proj_weight (H, R + 2N, P), dt_proj_weight (H, P, R), dt_proj_bias (H, P),
A_log (H, P, N), D (H, P): the same counts, B and C per head. Decode state: the conv window (E, K-1) and the SSM
state (E, N). Symbols: D model dim, E inner dim (inner, else expand * D), N state size, R dt_rank, K conv width,
H heads, P = E / H.
"""
from __future__ import annotations

import math
from typing import Literal, Optional

from pydantic import Field

from ._base import KindSpec, auto_field, positive_int, scaled_width

INNER_NORMS = ("none", "weighted", "plain")


class MambaSpec(KindSpec):
    """Mamba-1 selective SSM (Gu & Dao 2023), as mamba_ssm's `Mamba`."""

    kind: Literal["mamba"] = "mamba"
    state: int = Field(16, ge=1, le=1024, description="SSM state size N")
    expand: int = Field(2, ge=1, le=16, description="d_inner = expand * dim (unless inner is given)")
    inner: Optional[int] = Field(None, ge=1, le=1_048_576, description="d_inner, an explicit width (wins over "
                                 "expand; e.g. Falcon-H1's 1.5 * dim), or none for expand * dim")
    conv: int = Field(4, ge=1, le=64, description="causal depthwise conv width")
    dt_rank: int = auto_field("rank of the dt projection (auto: ceil(dim/16))", ge=1, le=65536)
    proj_bias: bool = Field(False, description="biases on in_proj and out_proj (transformers' use_bias)")
    conv_bias: bool = Field(True, description="bias on the depthwise conv (transformers' use_conv_bias)")
    inner_norm: Literal["none", "weighted", "plain"] = Field(
        "none", description="RMSNorms on dt, B and C after x_proj: weighted (Jamba's dt/b/c_layernorm), plain "
                            "(FalconMamba's weightless), or none")
    eps: float = Field(1e-6, gt=0, le=1, description="epsilon of the inner norms (needs inner_norm weighted|plain)")
    heads: int = Field(1, ge=1, le=1024, description="mamba heads, each with its own x_proj and dt_proj (Zamba's "
                       "n_mamba_heads; must divide the inner width)")

    SHOWN = ("state", "expand")

    @classmethod
    def resolve(cls, options: dict, dim: int) -> dict:
        out = dict(options)
        if out.get("dt_rank") == "auto":
            out["dt_rank"] = math.ceil(dim / 16)
        for name in ("state", "conv", "dt_rank", "heads"):
            if name in out:
                positive_int(out[name], name)
        inner = cls.option(out, "inner")
        if inner is None:
            width = scaled_width(cls.option(out, "expand"), dim)
        elif isinstance(inner, bool) or not isinstance(inner, int) or inner < 1:
            raise ValueError(f"option inner must be a positive integer, got {inner!r} (valid: inner=N for N >= 1, "
                             f"or inner=none for expand*dim)")
        else:
            width = inner
        heads = cls.option(out, "heads")
        if width % heads:
            raise ValueError(f"option heads={heads} does not divide the inner width {width} (valid: heads=H where "
                             f"H divides inner, or expand*dim without inner)")
        norm = cls.option(out, "inner_norm")
        if norm not in INNER_NORMS:
            raise ValueError(f"option inner_norm must be one of {', '.join(INNER_NORMS)}, got {norm!r}")
        if norm == "none" and cls.option(out, "eps") != cls.default("eps"):
            raise ValueError(f"option eps={cls.option(out, 'eps')!r} needs inner_norm=weighted or inner_norm=plain "
                             f"(valid: inner_norm=weighted|plain eps=F, or no eps without inner norms)")
        return out

    def width(self, dim: int) -> int:
        """d_inner E: `inner` when given, else expand * dim (the layers read this)."""
        return int(self.inner) if self.inner is not None else int(self.expand * dim)

    def _dims(self, dim: int):
        return self.width(dim), self.state, self.dt_rank, self.conv

    def params(self, dim: int) -> int:
        E, N, R, K = self._dims(dim)
        # in_proj + conv1d (w, b) + x_proj + dt_proj (w, b) + A_log + D + out_proj
        total = dim * 2 * E + E * K + E * (R + 2 * N) + R * E + E + E * N + E + E * dim
        total += (2 * E + dim if self.proj_bias else 0) + (E if self.conv_bias else 0)
        return total + (R + 2 * N if self.inner_norm == "weighted" else 0)

    def state_numel(self, dim: int, context: int = 0, meta: int = 0) -> int:
        E, N, _, K = self._dims(dim)
        return E * (K - 1) + E * N  # conv window + ssm state

    def flops(self, dim: int, context: int = 0, meta: int = 0) -> int:
        E, N, R, K = self._dims(dim)
        matmuls = 2 * dim * 2 * E + 2 * E * (R + 2 * N) + 2 * R * E + 2 * E * dim
        biases = 2 * E + dim if self.proj_bias else 0   # in_proj and out_proj bias adds
        conv = 2 * E * K + (E if self.conv_bias else 0) + E   # taps + bias + silu
        # per normed element (R + 2N per head): square-and-sum (madd = 2), scale (1), weight (1, weighted only)
        norms = {"none": 0, "plain": 3, "weighted": 4}[self.inner_norm] * (R + 2 * N) * self.heads
        dt = 2 * E                        # bias + softplus
        # per (e, n): dt*A, exp, dt*u*B (1 mul, dt*u shared), h update (1 madd = 2), C.h (1 madd = 2)
        scan = 7 * E * N + E
        gate = 2 * E + E + E              # D skip (madd) + silu(z) + product
        return matmuls + biases + conv + norms + dt + scan + gate
