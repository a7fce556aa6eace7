"""The IR: frozen Pydantic models, fully resolved (one entry per layer, every option filled).

Backends loop over `Model.layers`; they never compute ratios or defaults. Options whose default is
written `auto` (e.g. Mamba's `dt_rank`) are resolved by the core before a spec is built.
"""
from __future__ import annotations

from typing import Annotated, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator

Act = Literal["gelu", "silu", "relu", "relu2", "swiglu"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)


def _auto(description: str, **kw):
    """A field whose textual default is `auto` (resolved from `dim` by the core)."""
    return Field(description=description, json_schema_extra={"auto": True}, **kw)


class MambaSpec(_Frozen):
    """Mamba-1 selective SSM (Gu & Dao 2023), as mamba_ssm's `Mamba`."""

    kind: Literal["mamba"] = "mamba"
    state: int = Field(16, ge=1, le=1024, description="SSM state size N")
    expand: int = Field(2, ge=1, le=16, description="d_inner = expand * dim")
    conv: int = Field(4, ge=1, le=64, description="causal depthwise conv width")
    dt_rank: int = _auto("rank of the dt projection (auto: ceil(dim/16))", ge=1, le=65536)


class Mamba2Spec(_Frozen):
    """Mamba-2 / SSD (Dao & Gu 2024), as mamba_ssm's `Mamba2`."""

    kind: Literal["mamba2"] = "mamba2"
    state: int = Field(128, ge=1, le=1024, description="SSM state size N")
    expand: int = Field(2, ge=1, le=16, description="d_inner = expand * dim")
    conv: int = Field(4, ge=1, le=64, description="causal depthwise conv width")
    head_dim: int = Field(64, ge=1, le=4096, description="channels per SSM head")
    groups: int = Field(1, ge=1, le=1024, description="B/C groups (ngroups)")
    chunk: int = Field(256, ge=1, le=65536, description="SSD chunk size")


class GRUSpec(_Frozen):
    """Gated recurrent unit with torch.nn.GRU semantics."""

    kind: Literal["gru"] = "gru"
    hidden: int = _auto("GRU hidden size (auto: dim)", ge=1, le=65536)


class RWKVSpec(_Frozen):
    """RWKV-7 time mixing (generalized delta rule), as flash-linear-attention's RWKV7Attention."""

    kind: Literal["rwkv"] = "rwkv"
    head_dim: int = Field(64, ge=1, le=4096, description="channels per head")
    decay_rank: int = _auto("low rank of the decay LoRA (auto: fla's rule)", ge=1, le=65536)
    a_rank: int = _auto("low rank of the in-context learning-rate LoRA (auto)", ge=1, le=65536)
    v_rank: int = _auto("low rank of the value-residual LoRA (auto)", ge=1, le=65536)
    gate_rank: int = _auto("low rank of the output-gate LoRA (auto)", ge=1, le=65536)
    value_residual: bool = _auto("lerp values towards the first rwkv layer's (auto: every rwkv layer but the first)")


class DeltaNetSpec(_Frozen):
    """DeltaNet (Yang et al. 2024), as flash-linear-attention's DeltaNet layer."""

    kind: Literal["delta_net"] = "delta_net"
    heads: int = Field(4, ge=1, le=1024, description="number of heads")
    head_dim: int = _auto("key/value head size (auto: dim // heads)", ge=1, le=4096)
    conv: int = Field(4, ge=1, le=64, description="short convolution width")
    gate: bool = Field(False, description="gated output norm")


class GatedDeltaNetSpec(_Frozen):
    """Gated DeltaNet (Yang, Kautz & Hatamizadeh 2025), as flash-linear-attention's GatedDeltaNet layer."""

    kind: Literal["gated_delta_net"] = "gated_delta_net"
    heads: int = Field(4, ge=1, le=1024, description="number of heads")
    head_dim: int = Field(64, ge=1, le=4096, description="key head size")
    expand_v: int = Field(2, ge=1, le=16, description="value head size = expand_v * head_dim")
    conv: int = Field(4, ge=1, le=64, description="short convolution width")
    gate: bool = Field(True, description="gated output norm")


class GriffinLRUSpec(_Frozen):
    """Griffin's recurrent block with the RG-LRU (De et al. 2024), as recurrentgemma."""

    kind: Literal["griffin_lru"] = "griffin_lru"
    width: int = _auto("RG-LRU width (auto: dim)", ge=1, le=65536)
    heads: int = Field(4, ge=1, le=1024, description="blocks of the block-diagonal gates")
    conv: int = Field(4, ge=1, le=64, description="temporal conv width")


class AttnSpec(_Frozen):
    """Causal multi-head attention: GQA, sliding window or global, QK-norm, optional RoPE."""

    kind: Literal["attn"] = "attn"
    heads: int = Field(4, ge=1, le=1024, description="query heads")
    head_dim: int = Field(64, ge=1, le=4096, description="channels per head")
    kv_heads: int = _auto("key/value heads, GQA (auto: heads)", ge=1, le=1024)
    window: Optional[int] = Field(60, ge=1, le=10_000_000, description="sliding window in steps, or none (global)")
    qk_norm: bool = Field(True, description="RMS-normalise queries and keys per head")
    rope: bool = Field(False, description="rotary position embedding")
    rope_base: float = Field(10000.0, gt=0, description="RoPE base")

    @model_validator(mode="after")
    def _gqa(self):
        if self.heads % self.kv_heads:
            raise ValueError(f"heads={self.heads} is not a multiple of kv_heads={self.kv_heads}")
        if self.rope and self.head_dim % 2:
            raise ValueError(f"rope needs an even head_dim, got {self.head_dim}")
        return self


class MLPSpec(_Frozen):
    """A standalone pre-norm feed-forward layer (Megatron's `-`)."""

    kind: Literal["mlp"] = "mlp"
    mult: float = Field(4.0, gt=0, le=64, description="hidden = int(mult * dim)")
    act: Act = Field("gelu", description="activation")


MixerSpec = Annotated[
    Union[MambaSpec, Mamba2Spec, GRUSpec, RWKVSpec, DeltaNetSpec, GatedDeltaNetSpec, GriffinLRUSpec, AttnSpec, MLPSpec],
    Field(discriminator="kind"),
]


class FFNSpec(_Frozen):
    """The FFN sub-block after a mixer: `x + ffn(norm(x))`. `token_shift` is RWKV-7's channel mixing."""

    mult: float = Field(4.0, gt=0, le=64, description="hidden = int(mult * dim)")
    act: Act = Field("gelu", description="activation")
    token_shift: bool = Field(False, description="RWKV channel mixing (token-shift lerp, relu^2)")


class Layer(_Frozen):
    """One block: one mixer, or two side by side (a parallel block, fused), then an optional FFN."""

    mixers: tuple[MixerSpec, ...] = Field(min_length=1, max_length=2)
    ffn: Optional[FFNSpec] = None
    shared: bool = Field(False, description="weights shared with every other layer of the same schedule entry")

    @property
    def kind(self) -> str:
        return "|".join(m.kind for m in self.mixers)

    @property
    def parallel(self) -> bool:
        return len(self.mixers) == 2


class Model(_Frozen):
    """A resolved hybrid model: explicit layers plus the model-wide settings."""

    name: str = "model"
    dim: int = Field(256, ge=1, le=1_000_000)
    input: Optional[int] = Field(None, ge=1, description="continuous features per step")
    vocab: Optional[int] = Field(None, ge=1, description="token vocabulary size")
    output: Literal["last", "sequence", "logits"] = "last"
    norm: Literal["layer", "rms"] = "layer"
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    meta_tokens: int = Field(0, ge=0, le=100_000)
    fusion: Literal["gate", "mean"] = "gate"
    share: tuple[str, ...] = ()
    layers: tuple[Layer, ...] = Field(min_length=1, max_length=10_000)

    @model_validator(mode="after")
    def _consistent(self):
        if (self.input is None) == (self.vocab is None):
            raise ValueError("exactly one of input and vocab must be set")
        if self.output == "logits" and self.vocab is None:
            raise ValueError("output logits needs a vocab")
        if self.meta_tokens and not any(m.kind == "attn" for l in self.layers for m in l.mixers):
            raise ValueError("meta tokens need at least one attention layer")
        return self

    @property
    def schedule(self) -> list[str]:
        """One string per layer: the kind, or `backbone|attn` for a parallel block."""
        return [l.kind for l in self.layers]

    @property
    def mode(self) -> str:
        return "parallel" if any(l.parallel for l in self.layers) else "interleaved"


KIND_SPECS: dict[str, type[BaseModel]] = {
    c.model_fields["kind"].default: c
    for c in (MambaSpec, Mamba2Spec, GRUSpec, RWKVSpec, DeltaNetSpec, GatedDeltaNetSpec, GriffinLRUSpec, AttnSpec, MLPSpec)
}
BACKBONE_KINDS = tuple(k for k in KIND_SPECS if k not in ("attn", "mlp"))

__all__ = ["Model", "Layer", "FFNSpec", "MixerSpec", "KIND_SPECS", "BACKBONE_KINDS", "MambaSpec", "Mamba2Spec", "GRUSpec",
           "RWKVSpec", "DeltaNetSpec", "GatedDeltaNetSpec", "GriffinLRUSpec", "AttnSpec", "MLPSpec"]
