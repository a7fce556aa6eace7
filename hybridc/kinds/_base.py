"""What every layer kind is: a frozen Pydantic spec (its options and defaults) plus the compiler's knowledge of it.

A kind module (`hybridc/kinds/<kind>.py`) defines one `KindSpec` subclass named `Spec`: its fields are the options
(the defaults written there are the only defaults), `resolve` fills the `auto` options from `dim` and checks what
Pydantic cannot, `params` / `state_numel` / `flops` are its exact cost formulas, and the class variables say how the
language and `describe` treat it (role, Megatron pattern letter, options shown, its own FFN).
"""
from __future__ import annotations

from typing import Any, ClassVar, Optional

from pydantic import BaseModel, ConfigDict, Field


class Frozen(BaseModel):
    """Immutable, no unknown fields, validators built on first use (keeps `hybridc describe` fast)."""

    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)


def auto_field(description: str, **kw):
    """A field whose textual default is `auto` (resolved from `dim` and the other options by `Spec.resolve`)."""
    return Field(description=description, json_schema_extra={"auto": True}, **kw)


def positive_int(value: Any, name: str, minimum: int = 1) -> int:
    """The one integer check of option values (used before arithmetic on them; Pydantic checks the rest)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"option {name} must be an integer >= {minimum}, got {value!r}")
    return value


def scaled_width(expand: Any, dim: int, name: str = "expand") -> int:
    """`expand * dim` as a positive integer (the layers use `int(expand * dim)`)."""
    width = expand * dim if isinstance(expand, (int, float)) and not isinstance(expand, bool) else 0
    if width < 1 or width != int(width):
        raise ValueError(f"{name}*dim must be a positive integer, got {name}={expand!r}, dim={dim}")
    return int(width)


class KindSpec(Frozen):
    """The base of every layer kind's spec. Subclasses set `kind: Literal["name"] = "name"` and their options.

    ROLE: "backbone" (a sequence mixer that can be the backbone of a ratio/every layout and pair with attention in
    a parallel block), "attention", or "mlp" (no sequence mixing).
    SHOWN: options `describe` always shows (every other option is shown when it differs from its default).
    OWN_FFN: FFNSpec options of the FFN sub-block this kind brings when it is alone in a layer (RWKV-7's channel
    mix), or None for the model's FFN rule. TAKES_FFN: False for a kind that never has an FFN sub-block.
    """

    ROLE: ClassVar[str] = "backbone"
    SHOWN: ClassVar[tuple[str, ...]] = ()
    OWN_FFN: ClassVar[Optional[dict]] = None
    TAKES_FFN: ClassVar[bool] = True
    MODEL_AUTO: ClassVar[tuple[str, ...]] = ()  # `auto` options settled by `link` from the kind's place in the model

    @classmethod
    def default(cls, name: str):
        """An option's declared default (the one place defaults are written)."""
        return cls.model_fields[name].default

    @classmethod
    def option(cls, options: dict, name: str):
        """An option's value in a partial option dict, else its default."""
        return options[name] if name in options else cls.default(name)

    @classmethod
    def resolve(cls, options: dict, dim: int) -> dict:
        """Fill `auto` options from `dim` and the other options; raise ValueError (without the kind's name, the
        caller prefixes it) for options that cannot go together. Returns a new dict."""
        return dict(options)

    @classmethod
    def link(cls, specs: list) -> list:
        """Settle the MODEL_AUTO options of this kind's mixers, given in layer order with those options `auto`;
        returns the values they take, one dict per spec (e.g. RWKV-7: only the first layer makes v_first)."""
        return [{} for _ in specs]

    def params(self, dim: int) -> int:
        """Exact parameter count of the layer (both backends build exactly these tensors)."""
        raise NotImplementedError

    def active_params(self, dim: int) -> int:
        """Parameters one token uses (differs from `params` for a mixture of experts: router + top_k experts)."""
        return self.params(dim)

    def state_numel(self, dim: int, context: int = 0, meta: int = 0) -> int:
        """Elements of the decode state per sequence after `context` steps (`meta` meta tokens in front)."""
        return 0

    def flops(self, dim: int, context: int = 0, meta: int = 0) -> int:
        """Forward FLOPs per token at position `context`: 2 per multiply-add (see each kind's docstring)."""
        raise NotImplementedError
