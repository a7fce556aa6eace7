"""`mamba2`: Mamba-2 / SSD (Dao & Gu 2024, arXiv:2405.21060), as mamba_ssm's `Mamba2`.

Parameters (docs/layers.md): in_proj (E + X + H, D) giving [z, x, B, C, dt] (+ bias with proj_bias), conv1d
(X, 1, K) (+ bias with conv_bias), dt_bias, A_log, D (H,) each, the gated RMSNorm weight (E,) (with out_norm),
out_proj (D, E) (+ bias with proj_bias). Decode state: the conv window (X, K-1) and the SSM state (H, P, N).
Symbols: D model dim, E inner dim (`inner`: expand * D unless heads or inner are given), H heads (E / P), P head_dim,
N state size, G groups, X conv channels (E + 2 G N), K conv width. Megatron-LM's pattern symbol `M`.
Falcon-H1's muP multipliers are options without parameters: `in_scale` (input), `out_scale` (output) and one per
in_proj slice, `z_scale x_scale b_scale c_scale dt_scale` (FalconH1Mixer's mup_vector over [z, x, B, C, dt]).
"""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field

from ._base import KindSpec, auto_field, positive_int, scaled_width


class Mamba2Spec(KindSpec):
    """Mamba-2 / SSD (Dao & Gu 2024), as mamba_ssm's `Mamba2`."""

    kind: Literal["mamba2"] = "mamba2"
    state: int = Field(128, ge=1, le=1024, description="SSM state size N")
    expand: int = Field(2, ge=1, le=16, description="d_inner = expand * dim")
    conv: int = Field(4, ge=1, le=64, description="causal depthwise conv width")
    head_dim: int = Field(64, ge=1, le=4096, description="channels per SSM head")
    groups: int = Field(1, ge=1, le=1024, description="B/C groups (ngroups)")
    chunk: int = Field(256, ge=1, le=65536, description="SSD chunk size")
    heads: int = auto_field("SSM heads H (auto: inner / head_dim); given, inner = heads * head_dim wins over expand",
                            ge=1, le=65536)
    inner: int = auto_field("inner width E, d_ssm (auto: heads * head_dim if heads is given, else expand * dim)",
                            ge=1, le=1_048_576)
    out_norm: bool = Field(True, description="gated RMSNorm before out_proj; false: out_proj(y * silu(z)), no "
                           "norm.weight (Falcon-H1's mamba_rms_norm=false)")
    norm_before_gate: bool = Field(False, description="true: rmsnorm(y) * silu(z); false: rmsnorm(y * silu(z)) "
                                   "(mamba_ssm's RMSNormGated)")
    proj_bias: bool = Field(False, description="biases on in_proj and out_proj (transformers' use_bias)")
    conv_bias: bool = Field(True, description="bias on conv1d (transformers' use_conv_bias)")
    in_scale: float = Field(1.0, gt=0, description="the input is multiplied by this before in_proj (Falcon-H1's "
                            "ssm_in_multiplier)")
    out_scale: float = Field(1.0, gt=0, description="out_proj's output is multiplied by this (Falcon-H1's "
                             "ssm_out_multiplier)")
    z_scale: float = Field(1.0, gt=0, description="in_proj's z slice times this (Falcon-H1's ssm_multipliers[0])")
    x_scale: float = Field(1.0, gt=0, description="in_proj's x slice times this (ssm_multipliers[1])")
    b_scale: float = Field(1.0, gt=0, description="in_proj's B slice times this (ssm_multipliers[2])")
    c_scale: float = Field(1.0, gt=0, description="in_proj's C slice times this (ssm_multipliers[3])")
    dt_scale: float = Field(1.0, gt=0, description="in_proj's dt slice times this, before dt_bias (ssm_multipliers[4])")
    dt_min: float = Field(0.0, ge=0, description="dt = max(softplus(dt + dt_bias), dt_min): transformers' "
                          "time_step_limit[0] (NemotronH and Zamba2 clamp at time_step_min, 0.001)")
    dt_max: Optional[float] = Field(None, gt=0, description="dt = min(., dt_max), or none (time_step_limit[1])")

    SHOWN = ("state", "heads", "head_dim")

    @classmethod
    def resolve(cls, options: dict, dim: int) -> dict:
        """Widths: inner and heads given must agree (inner = heads * head_dim); one given sets the other; neither:
        inner = expand * dim. The head count must be divisible by groups."""
        out = dict(options)
        for name in ("state", "conv", "head_dim", "groups", "chunk"):
            if name in out:
                positive_int(out[name], name)
        heads, inner = out.get("heads", "auto"), out.get("inner", "auto")
        for name, value in (("heads", heads), ("inner", inner)):
            if value != "auto":
                positive_int(value, name)
        head_dim, groups = cls.option(out, "head_dim"), cls.option(out, "groups")
        if heads != "auto" and inner != "auto" and inner != heads * head_dim:
            raise ValueError(f"inner={inner} must equal heads*head_dim={heads}*{head_dim}={heads * head_dim} "
                             f"(valid: inner={heads * head_dim}, or give one of heads, inner)")
        if inner == "auto":
            inner = heads * head_dim if heads != "auto" else scaled_width(cls.option(out, "expand"), dim)
        if inner % head_dim:
            what = "expand*dim" if out.get("inner", "auto") == "auto" else "inner"
            raise ValueError(f"{what}={inner} is not divisible by head_dim={head_dim}")
        heads = inner // head_dim
        if heads % groups:
            raise ValueError(f"number of heads {heads} (inner/head_dim) is not divisible by groups={groups}")
        if cls.option(out, "norm_before_gate") and not cls.option(out, "out_norm"):
            raise ValueError("norm_before_gate=true needs out_norm=true (without the norm the output is "
                             "out_proj(y * silu(z)); valid: out_norm=true norm_before_gate=true, or out_norm=false)")
        lo, hi = cls.option(out, "dt_min"), cls.option(out, "dt_max")
        if hi is not None and isinstance(lo, (int, float)) and isinstance(hi, (int, float)) and hi <= lo:
            raise ValueError(f"dt_max={hi} must exceed dt_min={lo} (dt is clamped to [dt_min, dt_max]; "
                             f"valid: dt_max > dt_min, or dt_max=none)")
        out["heads"], out["inner"] = heads, inner
        return out

    def _dims(self, dim: int):
        return self.inner, self.heads, self.groups * self.state, self.conv

    def params(self, dim: int) -> int:
        E, H, GN, K = self._dims(dim)
        X = E + 2 * GN
        # in_proj [z, x, B, C, dt] (+ b) + conv1d w (+ b) + dt_bias + A_log + D + norm.weight + out_proj (+ b)
        biases = (E + X + H + dim if self.proj_bias else 0) + (X if self.conv_bias else 0)
        return dim * (E + X + H) + X * K + 3 * H + (E if self.out_norm else 0) + E * dim + biases

    def state_numel(self, dim: int, context: int = 0, meta: int = 0) -> int:
        E, _, GN, K = self._dims(dim)
        return (E + 2 * GN) * (K - 1) + E * self.state  # conv window + (H, P, N) ssm state

    def flops(self, dim: int, context: int = 0, meta: int = 0) -> int:
        E, H, GN, K = self._dims(dim)
        X, N = E + 2 * GN, self.state
        matmuls = 2 * dim * (E + X + H) + 2 * E * dim
        conv = 2 * X * K + (X if self.conv_bias else 0) + X   # taps + bias + silu
        dt = 2 * H + 2 * H                # bias + softplus, dt*A + exp
        # per (h, p, n): (dt*x)*B (1 mul), decay*S + . (1 madd = 2), C.S (1 madd = 2); per (h, p): dt*x
        scan = 5 * E * N + E
        tail = 2 * E + 2 * E              # D skip (madd), silu(z) * y
        norm = 4 * E if self.out_norm else 0   # group RMSNorm (square-sum madd, scale, weight)
        bias = E + X + H + dim if self.proj_bias else 0
        clamp = H * ((self.dt_min > 0) + (self.dt_max is not None))  # a compare per head and bound
        return matmuls + conv + dt + scan + tail + norm + bias + clamp + self._scale_flops(dim)

    def _scale_flops(self, dim: int) -> int:
        """One multiply per channel each muP multiplier other than 1 scales (input, in_proj slices, output)."""
        E, H, GN, _ = self._dims(dim)
        widths = {"in": dim, "z": E, "x": E, "b": GN, "c": GN, "dt": H, "out": dim}
        return sum(n for k, n in widths.items() if getattr(self, f"{k}_scale") != 1.0)
