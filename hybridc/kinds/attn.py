"""`attn`: causal multi-head attention with GQA, a sliding window or global, QK-norm, optional (partial) RoPE,
optional biases, output gate (Qwen3-Next) and logit soft-capping (Gemma-2), scalar multipliers (the score scale, as
Granite's attention_multiplier; Falcon-H1's muP in/key/out multipliers). Megatron-LM's pattern symbol `*`.

Parameters (docs/layers.md): q_proj (H*hd, D) (gate: (2*H*hd, D), query and gate interleaved per head), k_proj/v_proj
(KV*hd, D), o_proj (D, H*hd), biases of q/k/v with qkv_bias and of o with o_bias, and q_norm / k_norm RMSNorm weights
(hd,) with qk_norm=head, (H*hd,) / (KV*hd,) with qk_norm=proj (OLMo-2). Decode state: the KV cache, meta tokens plus the (window-capped) past.
FLOPs per token at position `context`: the projections (the gate's half of q_proj included) plus QK^T and AV over the
keys it sees (2 per multiply-add; biases, norms, RoPE, the sigmoid gate and the soft-cap are elementwise, not counted).
"""
from __future__ import annotations

from typing import Literal, Optional, Union

from pydantic import Field, field_validator, model_validator

from ._base import KindSpec, auto_field


class AttnSpec(KindSpec):
    """Causal multi-head attention: GQA, sliding window or global, QK-norm, optional RoPE."""

    kind: Literal["attn"] = "attn"
    heads: int = Field(4, ge=1, le=1024, description="query heads")
    head_dim: int = Field(64, ge=1, le=4096, description="channels per head")
    kv_heads: int = auto_field("key/value heads, GQA (auto: heads)", ge=1, le=1024)
    window: Optional[int] = Field(60, ge=1, le=10_000_000, description="sliding window in steps, or none (global)")
    qk_norm: Union[Literal["head", "proj", "none"], bool] = Field(
        "head", description="RMS-normalise queries and keys: per head (weights (hd,)), over the whole projection "
        "before the split into heads (weights (H*hd,) and (KV*hd,), OLMo-2), or none; true = head, false = none")
    rope: bool = Field(False, description="rotary position embedding")
    rope_base: float = Field(10000.0, gt=0, description="RoPE base")
    rope_fraction: float = Field(1.0, gt=0, le=1, description="fraction of each head's channels RoPE rotates (the "
                                 "first int(head_dim*rope_fraction), an even count; transformers' partial_rotary_factor)")
    qkv_bias: bool = Field(False, description="biases on the q, k, v projections")
    o_bias: bool = Field(False, description="bias on the output projection")
    gate: bool = Field(False, description="output gate: q_proj also makes g, y = o_proj(attn * sigmoid(g)) (Qwen3-Next)")
    softcap: Optional[float] = Field(None, gt=0, description="logit soft-cap c: scores -> c*tanh(scores/c), or none")
    kv_reuse: bool = Field(False, description="reuse the keys/values (projections and cache) of the previous attention "
                           "layer, which has its own: no k_proj, v_proj, k_norm or KV cache here (Hymba's cross-layer "
                           "KV sharing, its config's kv_reuse_group)")
    scale: Optional[float] = Field(None, gt=0, description="score scale: scores = scale * q.k (none: 1/sqrt(head_dim); "
                                   "Granite's attention_multiplier)")
    in_scale: float = Field(1.0, gt=0, description="the input is multiplied by this before the projections (Falcon-H1's "
                            "attention_in_multiplier)")
    key_scale: float = Field(1.0, gt=0, description="k_proj's output is multiplied by this, before QK-norm and RoPE "
                             "(Falcon-H1's key_multiplier)")
    out_scale: float = Field(1.0, gt=0, description="o_proj's output is multiplied by this (Falcon-H1's "
                             "attention_out_multiplier)")

    ROLE = "attention"
    SHOWN = ("heads", "kv_heads", "head_dim", "window")

    @field_validator("qk_norm", mode="after")
    @classmethod
    def _qk_form(cls, value):
        """The older boolean form: true = per head, false = none."""
        return {True: "head", False: "none"}[value] if isinstance(value, bool) else value

    @model_validator(mode="after")
    def _gqa(self):
        if self.heads % self.kv_heads:
            raise ValueError(f"heads={self.heads} is not a multiple of kv_heads={self.kv_heads}")
        if self.rope and self.head_dim % 2:
            raise ValueError(f"rope needs an even head_dim, got {self.head_dim}")
        if self.rope_fraction != 1.0:
            if not self.rope:
                raise ValueError(f"rope_fraction={self.rope_fraction} needs rope=true (valid: rope=true "
                                 f"rope_fraction=F, or rope_fraction=1 without rope)")
            r = self.rope_dim
            if r < 2 or r % 2:
                raise ValueError(f"rope_fraction={self.rope_fraction} rotates int(head_dim*rope_fraction)={r} "
                                 f"channels of head_dim={self.head_dim}: it must be an even count >= 2 (valid: "
                                 f"rope_fraction=r/{self.head_dim} for r in 2, 4, ..., {self.head_dim - self.head_dim % 2}"
                                 f", e.g. {max(2, r - r % 2) / self.head_dim:g})")
        return self

    @property
    def rope_dim(self) -> int:
        """Channels of each head RoPE rotates (the first ones; the rest pass through)."""
        return int(self.head_dim * self.rope_fraction)

    @classmethod
    def resolve(cls, options: dict, dim: int) -> dict:
        out = dict(options)
        if out.get("kv_heads", "auto") == "auto":
            out["kv_heads"] = cls.option(out, "heads")
        return out

    def keys(self, context: int, meta: int) -> int:
        """Keys a query at position `context` attends to (meta tokens always included)."""
        seen = context if self.window is None else min(context, self.window)
        return meta + seen

    def params(self, dim: int) -> int:
        inner, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim * (0 if self.kv_reuse else 1)
        q_out = inner * (2 if self.gate else 1)
        biases = (q_out + 2 * kv if self.qkv_bias else 0) + (dim if self.o_bias else 0)
        norms = {"head": self.head_dim * (1 if self.kv_reuse else 2), "proj": inner + kv, "none": 0}[self.qk_norm]
        return dim * q_out + dim * inner + 2 * dim * kv + biases + norms

    def state_numel(self, dim: int, context: int = 0, meta: int = 0) -> int:
        if self.kv_reuse:  # the group's first layer holds the cache
            return 0
        return 2 * self.kv_heads * self.head_dim * self.keys(context, meta)

    def flops(self, dim: int, context: int = 0, meta: int = 0) -> int:
        inner, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim * (0 if self.kv_reuse else 1)
        q_out = inner * (2 if self.gate else 1)
        return 2 * dim * (q_out + inner + 2 * kv) + 4 * inner * self.keys(context, meta)
