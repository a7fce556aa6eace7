"""The IR: frozen Pydantic models, fully resolved (one entry per layer, every option filled).

Backends loop over `Model.layers`; they never compute ratios or defaults. A layer's mixers are the specs of the
layer kinds in `hybridc.kinds` (one module per kind, imported when a model uses it: the IR does not build a
validator for kinds a model does not use, which keeps `hybridc describe` fast however many kinds there are).
"""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, SerializeAsAny, field_validator, model_validator

from .kinds import NAMES, KindSpec, spec_class
from .kinds._base import Frozen
from .kinds._ffn import FFNSpec
from .sharing import Site


class Layer(Frozen):
    """One block: one mixer, or a backbone and attention side by side (a parallel block, fused), then an optional FFN."""

    mixers: tuple[SerializeAsAny[KindSpec], ...] = Field(min_length=1, max_length=2)
    ffn: Optional[FFNSpec] = None
    norm_place: Optional[Literal["pre", "post", "both"]] = Field(
        None, description="this layer's norm placement where it is not the model's (`at N norm place=post`: "
        "OLMo-hybrid's post-norm attention layers among pre-norm ones); none: the model's")
    shared: bool = Field(False, description="weights shared with every other layer of the same schedule entry")
    site: Optional[Site] = Field(None, description="a call site of a shared block with share options (Zamba2)")

    @field_validator("mixers", mode="before")
    @classmethod
    def _specs(cls, value):
        """Dicts (JSON, `model_dump`) become their kind's spec; spec instances pass as they are."""
        out = []
        for m in value:
            if isinstance(m, dict):
                kind = m.get("kind")
                if kind not in NAMES:
                    raise ValueError(f"unknown layer kind {kind!r}; valid kinds: {', '.join(NAMES)}")
                m = spec_class(kind).model_validate(m)
            out.append(m)
        return tuple(out)

    @model_validator(mode="after")
    def _pair(self):
        if len(self.mixers) == 2 and (self.mixers[0].ROLE, self.mixers[1].ROLE) != ("backbone", "attention"):
            raise ValueError(f"a parallel block is a backbone kind and attention (backbone|attn), got {self.kind}")
        return self

    @property
    def kind(self) -> str:
        return "|".join(m.kind for m in self.mixers)

    @property
    def parallel(self) -> bool:
        return len(self.mixers) == 2


class Model(Frozen):
    """A resolved hybrid model: explicit layers plus the model-wide settings."""

    name: str = "model"
    dim: int = Field(256, ge=1, le=1_000_000)
    input: Optional[int] = Field(None, ge=1, description="continuous features per step")
    vocab: Optional[int] = Field(None, ge=1, description="token vocabulary size")
    pad_token: Optional[int] = Field(None, ge=0, description="the embedding's padding index (nn.Embedding's "
                                     "padding_idx, transformers' pad_token_id): that row is zero at init and gets no "
                                     "gradient; none: no padding row")
    output: Literal["last", "sequence", "logits"] = "last"
    tie_embeddings: bool = Field(False, description="output logits reuse embed.weight as the head (no lm_head)")
    norm: Literal["layer", "rms"] = "layer"
    norm_eps: Optional[float] = Field(None, gt=0, lt=1, description="eps of every norm the model has: block, final, "
                                      "fusion and QK norms, mamba2's and the delta family's output norms (none: each "
                                      "norm's own, LayerNorm 1e-5, RMSNorm and QK-norm 1e-6, output norms 1e-5)")
    norm_zero_centered: bool = Field(False, description="block, final, fusion and QK norm weights stored as w, applied "
                                     "as (1 + w), init 0 (Gemma's and Qwen3-Next's RMSNorm, Nemotron's LayerNorm1P)")
    norm_place: Literal["pre", "post", "both"] = Field("pre", description="where block norms sit: pre x + f(norm(x)), "
                                                       "post x + post_norm(f(x)) (OLMo-2), both x + post_norm(f(norm(x))) "
                                                       "(Gemma-2/3); for the mixer and the FFN sub-block alike")
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    meta_tokens: int = Field(0, ge=0, le=100_000)
    fusion: Literal["gate", "mean", "sum", "hymba"] = "gate"  # sum: ssm + attn, no parameters (Falcon-H1); hymba:
    # Hymba's fused block, one in_proj and one out_proj around mamba|attn heads (hybridc/hymba.py)
    share: tuple[str, ...] = ()
    embed_scale: float = Field(1.0, gt=0, description="the embedded input stream is multiplied by this (Gemma's "
                               "sqrt(dim), Granite's embedding_multiplier, Falcon-H1's embedding_multiplier)")
    residual_scale: float = Field(1.0, gt=0, description="each sub-block's output is multiplied by this before the "
                                  "residual add (Granite's residual_multiplier)")
    logit_scale: float = Field(1.0, gt=0, description="logits multiplied by this (Falcon-H1's lm_head_multiplier; "
                               "Granite's 1 / logits_scaling)")
    logit_softcap: Optional[float] = Field(None, gt=0, description="final logits -> c*tanh(logits/c) (RecurrentGemma's "
                                           "final_logit_softcapping), or none")
    layers: tuple[Layer, ...] = Field(min_length=1, max_length=10_000)

    @model_validator(mode="after")
    def _consistent(self):
        if (self.input is None) == (self.vocab is None):
            raise ValueError("exactly one of input and vocab must be set")
        if self.output == "logits" and self.vocab is None:
            raise ValueError("output logits needs a vocab")
        if self.tie_embeddings and (self.vocab is None or self.output != "logits"):
            raise ValueError("tie_embeddings needs a vocab model with output logits (the head reuses embed.weight)")
        if self.pad_token is not None and (self.vocab is None or self.pad_token >= self.vocab):
            raise ValueError(f"pad_token {self.pad_token} " + ("needs a vocab (token input)" if self.vocab is None
                             else f"is not a token id: it must be below vocab {self.vocab}"))
        for name in ("logit_scale", "logit_softcap"):
            if getattr(self, name) != type(self).model_fields[name].default and self.output != "logits":
                raise ValueError(f"{name} needs output logits (valid: `output logits` with `vocab N`)")
        if self.meta_tokens and not any(m.ROLE == "attention" for l in self.layers for m in l.mixers):
            raise ValueError("meta tokens need at least one attention layer")
        from .hymba import fusion_problem, kv_reuse_problems

        for l in self.layers if self.fusion == "hymba" else ():
            if l.parallel and fusion_problem(l, self.dim):
                raise ValueError(fusion_problem(l, self.dim))
        for i, _, msg in kv_reuse_problems(self.layers, self.fusion, self.dim)[:1]:
            raise ValueError(f"layer {i + 1}: {msg}")
        return self

    @property
    def schedule(self) -> list[str]:
        """One string per layer: the kind, or `backbone|attn` for a parallel block."""
        return [l.kind for l in self.layers]

    def layer_place(self, layer: Layer) -> str:
        """Where a layer's block norms sit: its own placement, else the model's."""
        return layer.norm_place or self.norm_place

    @property
    def norm_hints(self) -> dict:
        """What the mixers' own norms take from the model-wide `norm` statement (QK-norm: eps and zero_centered;
        mamba2's and the delta family's output norms: eps), as extra attributes of their backend specs; empty when
        not written, so each layer keeps its own default."""
        out = {} if self.norm_eps is None else {"norm_eps": self.norm_eps}
        return out | ({"norm_zero_centered": True} if self.norm_zero_centered else {})

    @property
    def mode(self) -> str:
        return "parallel" if any(l.parallel for l in self.layers) else "interleaved"


def json_schema() -> dict:
    """The IR's JSON schema (`hybridc schema`): a layer's mixers are the discriminated union of every registered kind."""
    from pydantic.json_schema import models_json_schema

    from .kinds import all_specs

    specs = all_specs()
    refs, schema = models_json_schema([(Model, "validation"), *((c, "validation") for c in specs.values())],
                                      ref_template="#/$defs/{model}")
    defs = schema["$defs"]
    mapping = {k: refs[(c, "validation")]["$ref"] for k, c in specs.items()}
    defs["Layer"]["properties"]["mixers"]["items"] = {
        "oneOf": [{"$ref": r} for r in mapping.values()], "discriminator": {"propertyName": "kind", "mapping": mapping}}
    defs.pop("KindSpec", None)
    top = defs.pop("Model")
    return {**top, "$defs": defs}


__all__ = ["Model", "Layer", "FFNSpec", "KindSpec", "json_schema"]
