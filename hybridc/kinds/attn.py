"""`attn`: causal multi-head attention with GQA, a sliding window or global, QK-norm, optional RoPE. Megatron-LM's
pattern symbol `*`.

Parameters (docs/layers.md): q_proj (H*hd, D), k_proj/v_proj (KV*hd, D), o_proj (D, H*hd), no biases, and q_norm /
k_norm RMSNorm weights (hd,) with qk_norm. Decode state: the KV cache, meta tokens plus the (window-capped) past.
FLOPs per token at position `context`: the projections plus QK^T and AV over the keys it sees.
"""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, model_validator

from ._base import KindSpec, auto_field


class AttnSpec(KindSpec):
    """Causal multi-head attention: GQA, sliding window or global, QK-norm, optional RoPE."""

    kind: Literal["attn"] = "attn"
    heads: int = Field(4, ge=1, le=1024, description="query heads")
    head_dim: int = Field(64, ge=1, le=4096, description="channels per head")
    kv_heads: int = auto_field("key/value heads, GQA (auto: heads)", ge=1, le=1024)
    window: Optional[int] = Field(60, ge=1, le=10_000_000, description="sliding window in steps, or none (global)")
    qk_norm: bool = Field(True, description="RMS-normalise queries and keys per head")
    rope: bool = Field(False, description="rotary position embedding")
    rope_base: float = Field(10000.0, gt=0, description="RoPE base")

    ROLE = "attention"
    PATTERN = "*"
    SHOWN = ("heads", "kv_heads", "head_dim", "window")

    @model_validator(mode="after")
    def _gqa(self):
        if self.heads % self.kv_heads:
            raise ValueError(f"heads={self.heads} is not a multiple of kv_heads={self.kv_heads}")
        if self.rope and self.head_dim % 2:
            raise ValueError(f"rope needs an even head_dim, got {self.head_dim}")
        return self

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
        inner, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        return 2 * dim * inner + 2 * dim * kv + (2 * self.head_dim if self.qk_norm else 0)

    def state_numel(self, dim: int, context: int = 0, meta: int = 0) -> int:
        return 2 * self.kv_heads * self.head_dim * self.keys(context, meta)

    def flops(self, dim: int, context: int = 0, meta: int = 0) -> int:
        inner, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        return 2 * dim * (2 * inner + 2 * kv) + 4 * inner * self.keys(context, meta)
