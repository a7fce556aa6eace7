"""A transformers `config.json` as a family module reads it: every field read or ignored on purpose, never skipped.

A family module reads fields with `get` (a default for fields transformers omits at their class default), checks
values with `expect` / `fail` (a located error: the file, the field's line and column in config.json, its value and
why hybridc cannot express it), and lists in its `IGNORED` the fields that do not change the computation. `finish`
then refuses any field neither read nor ignored: an option hybridc does not know is an error, not an approximation.
"""
from __future__ import annotations

import json
import math
import re
from typing import Any, Iterable

from ..errors import HybridcError, Pos, suggest

MISSING = object()

# Fields of every transformers config that never change the computation of a causal LM's logits.
COMMON_IGNORED = {
    "architectures": "the class name (checked against the family)",
    "model_type": "selects the family",
    "transformers_version": "provenance",
    "_name_or_path": "provenance",
    "torch_dtype": "the storage dtype (the tensors' own dtype is used)",
    "dtype": "the storage dtype (the tensors' own dtype is used)",
    "bos_token_id": "a token id (generation)",
    "eos_token_id": "a token id (generation)",
    "sep_token_id": "a token id (generation)",
    "decoder_start_token_id": "a token id (generation)",
    "use_cache": "decoding bookkeeping",
    "output_attentions": "what forward returns",
    "output_hidden_states": "what forward returns",
    "return_dict": "what forward returns",
    "initializer_range": "initialisation of new weights (the checkpoint's are loaded)",
    "auto_map": "remote-code class names",
    "tokenizer_class": "the tokenizer",
    "num_logits_to_keep": "how many logits forward returns",
    "logits_to_keep": "how many logits forward returns",
    "output_router_logits": "what forward returns (router logits for the aux loss)",
    "router_aux_loss_coef": "a training-loss coefficient (hybridc's trainer sets its own)",
    "router_z_loss_coef": "a training-loss coefficient",
    "_attn_implementation_autoset": "an implementation choice",
    "attn_implementation": "an implementation choice (same math)",
    "chunk_size_feed_forward": "a memory-saving option of the same math",
    "is_decoder": "always a decoder here",
    "add_cross_attention": "unused by causal LMs",
    "tie_encoder_decoder": "unused by causal LMs",
    "problem_type": "a head for classification",
    "id2label": "a head for classification",
    "label2id": "a head for classification",
    "finetuning_task": "provenance",
    "prefix": "generation",
    "task_specific_params": "generation",
    "pruned_heads": "none in these families",
    "torchscript": "export setting",
    "tf_legacy_loss": "a loss option",
    "use_bfloat16": "a storage setting",
    "cross_attention_hidden_size": "unused by causal LMs",
    "is_encoder_decoder": "always a decoder here",
    "quantization_config": "",  # not ignored: read and refused by `finish` (see below)
}
COMMON_IGNORED.pop("quantization_config")


def decode(value):
    """transformers writes non-finite floats as {"__float__": "Infinity"}: back to floats (recursively)."""
    if isinstance(value, dict):
        if set(value) == {"__float__"}:
            return float(value["__float__"])
        return {k: decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decode(v) for v in value]
    return value


def encode(value):
    """The inverse of `decode`, for config.json files hybridc writes."""
    if isinstance(value, float) and not math.isfinite(value):
        return {"__float__": "Infinity" if value > 0 else "-Infinity" if value < 0 else "NaN"}
    if isinstance(value, dict):
        return {k: encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [encode(v) for v in value]
    return value


class HFConfig:
    """config.json's dict with the fields a family module read remembered (see the module docstring)."""

    def __init__(self, data: dict, *, text: str | None = None, source_name: str = "config.json"):
        self.data = decode(dict(data))
        self.text = text if text is not None else json.dumps(data, indent=2)
        self.source_name = source_name
        self.read: set[str] = set()

    def __contains__(self, key: str) -> bool:
        return key in self.data

    def get(self, key: str, default: Any = MISSING) -> Any:
        """The field's value (marked read); `default` when config.json omits it (transformers writes only the
        fields that differ from its base class's defaults); no default and absent: an error."""
        self.read.add(key)
        if key in self.data:
            return self.data[key]
        if default is MISSING:
            raise HybridcError(f"config.json has no field {key!r}, which the {self.data.get('model_type')} family "
                               f"needs", source_name=self.source_name)
        return default

    def expect(self, key: str, allowed: Iterable, default: Any = MISSING, why: str = "") -> Any:
        """The field's value, which must be one of `allowed` (else a located error listing them)."""
        allowed = list(allowed)
        value = self.get(key, default)
        if value not in allowed:
            self.fail(key, why or "hybridc expresses only " + " or ".join(json.dumps(a) for a in allowed))
        return value

    def pos(self, key: str) -> Pos | None:
        m = re.search(r'"' + re.escape(key) + r'"\s*:', self.text)
        if m is None:
            return None
        line = self.text.count("\n", 0, m.start()) + 1
        col = m.start() - (self.text.rfind("\n", 0, m.start()) + 1) + 1
        return Pos(line, col, len(key) + 2)

    def fail(self, key: str, why: str, hint: str | None = None):
        value = self.data.get(key, "<absent>")
        shown = json.dumps(value) if not isinstance(value, str) or value != "<absent>" else value
        if len(shown) > 80:
            shown = shown[:77] + "..."
        raise HybridcError(f"field {key!r} = {shown}: {why}", self.pos(key), source=self.text,
                           source_name=self.source_name, hint=hint)

    def finish(self, ignored: dict | Iterable[str]) -> None:
        """Every field read or ignored on purpose; the first other one is an error."""
        known = set(COMMON_IGNORED) | set(ignored) | self.read
        for key in self.data:
            if key not in known:
                self.fail(key, f"hybridc's {self.data.get('model_type')} importer does not know this field, so it "
                               "cannot promise the same computation",
                          hint=suggest(key, sorted(known)) or "if it does not change the computation, add it to the "
                                                              "family module's IGNORED")
