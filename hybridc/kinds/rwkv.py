"""`rwkv`: RWKV-7 "Goose" time mixing (Peng et al. 2025, arXiv:2503.14456), as flash-linear-attention's
RWKV7Attention; alone in a layer it brings RWKV-7's channel mixing as its FFN (fla's RWKV7FeedForward).

Parameters: token-shift lerps x_r/x_w/x_k/x_v/x_a/x_g (D,) each, k_k and k_a (D,), r_k (H, K), r/k/v/o
projections (D, D), the group norm (D,) weight and bias, and LoRAs (D, R) + (R, D) for the decay (with bias),
the in-context learning rate (with bias), the output gate (no bias) and, with `value_residual`, the value
residual (with bias). Decode state: the previous token (D,) and the [K, K] state per head.
Symbols: D model dim, H heads (D / K), K head_dim, R LoRA ranks.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from ._base import KindSpec, auto_field, positive_int


def default_ranks(dim: int, head_dim: int) -> dict[str, int]:
    """fla's RWKV7Attention default LoRA ranks (larger for head_dim > 64 via factor = head_dim / 64)."""
    factor = head_dim / 64
    sq = dim ** 0.5

    def r32(x):
        return max(32, int(round(x / 32) * 32))
    return {"decay_rank": r32(2.5 * sq * factor), "a_rank": r32(2.5 * sq * factor),
            "v_rank": r32(1.7 * sq * factor), "gate_rank": r32(5 * sq)}


def _lora(dim: int, rank: int, bias: bool = True) -> int:
    return dim * rank + rank * dim + (dim if bias else 0)


class RWKVSpec(KindSpec):
    """RWKV-7 time mixing (generalized delta rule), as flash-linear-attention's RWKV7Attention."""

    kind: Literal["rwkv"] = "rwkv"
    head_dim: int = Field(64, ge=1, le=4096, description="channels per head")
    decay_rank: int = auto_field("low rank of the decay LoRA (auto: fla's rule)", ge=1, le=65536)
    a_rank: int = auto_field("low rank of the in-context learning-rate LoRA (auto)", ge=1, le=65536)
    v_rank: int = auto_field("low rank of the value-residual LoRA (auto)", ge=1, le=65536)
    gate_rank: int = auto_field("low rank of the output-gate LoRA (auto)", ge=1, le=65536)
    value_residual: bool = auto_field("lerp values towards the first rwkv layer's (auto: every rwkv layer but the first)")

    SHOWN = ("head_dim",)
    OWN_FFN = {"mult": 4.0, "act": "relu2", "token_shift": True}  # RWKV-7's channel mix
    MODEL_AUTO = ("value_residual",)

    @classmethod
    def link(cls, specs: list) -> list:
        """RWKV-7's value residual: the first rwkv mixer of the model makes v_first, every later one lerps to it."""
        return [{"value_residual": i > 0} for i in range(len(specs))]

    @classmethod
    def resolve(cls, options: dict, dim: int) -> dict:
        out = dict(options)
        head_dim = positive_int(cls.option(out, "head_dim"), "head_dim")
        if dim % head_dim:
            raise ValueError(f"dim={dim} is not divisible by head_dim={head_dim}")
        for name, value in default_ranks(dim, head_dim).items():
            if out.get(name, "auto") == "auto":
                out[name] = value
            positive_int(out[name], name)
        if out.get("value_residual") == "auto":
            out["value_residual"] = False  # a placeholder: `link` settles it once every layer is known
        if "value_residual" in out and not isinstance(out["value_residual"], bool):
            raise ValueError(f"option value_residual must be a bool, got {out['value_residual']!r}")
        return out

    def params(self, dim: int) -> int:
        n = 6 * dim + 2 * dim + dim + 4 * dim * dim + 2 * dim   # x_*, k_k/k_a, r_k, r/k/v/o proj, g_norm
        n += _lora(dim, self.decay_rank) + _lora(dim, self.a_rank) + _lora(dim, self.gate_rank, bias=False)
        n += _lora(dim, self.v_rank) if self.value_residual else 0
        return n

    def state_numel(self, dim: int, context: int = 0, meta: int = 0) -> int:
        return dim + dim * self.head_dim                        # token shift + H * K * K recurrent state

    def flops(self, dim: int, context: int = 0, meta: int = 0) -> int:
        ranks = self.decay_rank + self.a_rank + self.gate_rank + (self.v_rank if self.value_residual else 0)
        mm = 2 * 4 * dim * dim + 2 * 2 * dim * ranks
        rec = 9 * dim * self.head_dim        # per head: exp(w)*S, a^T S, b sa^T, k v^T, r^T S (H K K each)
        return mm + rec
