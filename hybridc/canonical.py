"""Model -> canonical text (`hybridc fmt`, `hybridc.dumps`): `load(dumps(m)) == m` for every model.

The text is compact: per-kind statements carry each kind's most common options, the layer list carries the
exceptions inline and is compressed with repeats (`(mamba x3 attn) x4`).
"""
from __future__ import annotations

import re
from collections import Counter

from .ir import FFNSpec, Layer, Model
from .kinds import NAMES, linked_values, spec_class
from .kinds._ffn import AFTER as FFN_AFTER
from .kinds._ffn import MOE_KEYS, default_bias, default_ffn, ffn_on_by_rule, placed, placed_options
from .options import is_auto, render
from .sharing import share_statements
from .summary import model_norm, model_scales

_KEYWORDS = {"layers", "ratio", "every", "pattern", "preset", "share", "at", "backbone", "placement", "offset"}


def _name(text: str) -> str:
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", text) and text not in _KEYWORDS and not re.fullmatch(r"x[0-9]+", text):
        return text
    return '"' + text.replace('"', "'") + '"'


def _defaults(kind: str, dim: int, written: dict | None = None) -> dict:
    """The values `kind` with the `written` options resolves to (the rest: class defaults, `auto` resolved from the
    others, e.g. attn's kv_heads from heads)."""
    cls = spec_class(kind)
    opts = {n: ("auto" if is_auto(f) else f.default) for n, f in cls.model_fields.items() if n != "kind"}
    for name in cls.MODEL_AUTO:
        opts.pop(name, None)
    return cls.resolve({**opts, **(written or {})}, dim)


def _kind_lines(model: Model) -> tuple[list[str], dict]:
    lines, base = [], {}
    mixers = [m for l in model.layers for m in l.mixers]
    for kind in NAMES:
        mine = [m for m in mixers if m.kind == kind]
        if not mine:
            continue
        fields = spec_class(kind).model_fields
        try:
            default = _defaults(kind, model.dim)
        except ValueError:  # its defaults do not fit this dim (rwkv head_dim 64 at dim 32): compare with the class ones
            default = {n: f.default for n, f in fields.items() if n != "kind" and n not in spec_class(kind).MODEL_AUTO}
        common = {name: Counter(getattr(m, name) for m in mine).most_common(1)[0][0] for name in default}
        chosen = {name: v for name, v in common.items() if v != default[name] and not is_auto(fields[name])}
        implied = _defaults(kind, model.dim, chosen)   # an `auto` option follows the written ones
        chosen = {name: v for name, v in common.items() if name in chosen or v != implied[name]}
        base[kind] = (chosen, {**implied, **chosen})
        if chosen:
            lines.append(f"{kind} " + " ".join(f"{k}={render(v)}" for k, v in chosen.items()))
    return lines, base


def _ffn_on_by_rule(layer: Layer, after: str) -> bool:
    return ffn_on_by_rule(layer.mixers, after)


def _ffn_line(model: Model) -> tuple[str | None, str, FFNSpec]:
    after = min(FFN_AFTER, key=lambda a: sum(_ffn_on_by_rule(l, a) != (l.ffn is not None) for l in model.layers))
    plain = [l.ffn for l in model.layers if l.ffn is not None and not l.ffn.token_shift]
    plain = [f for f in plain if not f.experts] or plain  # dense FFNs first: `moe every=...` writes the MoEs
    spec = Counter(plain).most_common(1)[0][0] if plain else FFNSpec()
    written = {k: getattr(spec, k) for k in _FFN_WRITTEN if getattr(spec, k) != FFNSpec.model_fields[k].default}
    if spec.bias != default_bias(spec.act, spec.gated, spec.experts):
        written["bias"] = spec.bias
    spec = FFNSpec(**written)
    parts = [f"{k}={render(v)}" for k, v in written.items()]
    if after != "attn":
        parts.append(f"after={after}")
    return ("ffn " + " ".join(parts) if parts else None), after, spec, written


def _moe_line(model: Model, ffn_spec: FFNSpec, ffn_written: dict):
    """`moe every=K offset=O ...` (hybridc.resolve's placement shortcut) when it writes the model's MoE FFNs in fewer
    `at` lines than none, and no `moe` layer's kind statement would take the same name. Returns (line, placement),
    placement = (every, offset, the placed spec), or (None, None)."""
    if any(m.kind == "moe" for l in model.layers for m in l.mixers):
        return None, None
    rows = [(i, l.ffn) for i, l in enumerate(model.layers) if l.ffn is not None and not _own_ffn(l)]
    moes = [f for _, f in rows if f.experts and f != ffn_spec]
    if not moes:
        return None, None
    spec = Counter(moes).most_common(1)[0][0]
    opts = {k: getattr(spec, k) for k in ("act", "gated", *MOE_KEYS) if getattr(spec, k) != getattr(ffn_spec, k)}
    if (spec.mult, spec.hidden) != (ffn_spec.mult, ffn_spec.hidden):
        opts |= {"hidden": spec.hidden} if spec.hidden is not None else {"mult": spec.mult}
    opts = {"experts": spec.experts} | opts
    if FFNSpec(**placed_options(ffn_written, opts)) != spec:
        return None, None
    best = (sum(f != ffn_spec for _, f in rows), 0, 0)  # (at lines needed, every, offset); without the shortcut
    for every in range(1, min(len(model.layers), 64) + 1):
        for offset in range(every):
            cost = sum(f != (spec if placed(i, every, offset) else ffn_spec) for i, f in rows)
            best = min(best, (cost, every, offset)) if cost < best[0] else best
    if not best[1]:
        return None, None
    text = " ".join(f"{k}={render(v)}" for k, v in opts.items())
    return f"moe every={best[1]} offset={best[2]} {text}", (best[1], best[2], spec)


def _own_ffn(layer: Layer) -> bool:
    """A layer whose FFN is its kind's own (RWKV-7's channel mix), which `moe every=...` leaves as it is."""
    return len(layer.mixers) == 1 and layer.mixers[0].OWN_FFN is not None


_FFN_WRITTEN = ("mult", "act", "gated", "hidden", "gate_scale", "down_scale", *MOE_KEYS)  # plus bias where not the
# form's default


def _item(layer: Layer, base: dict, after: str, linked: list, dim: int) -> str:
    members = []
    for i, m in enumerate(layer.mixers):
        written, values = base[m.kind]
        opts = {k: getattr(m, k) for k in values if getattr(m, k) != values[k]}
        implied = _defaults(m.kind, dim, {**written, **opts})   # `auto` options follow the inline ones
        opts = {k: getattr(m, k) for k in values if k in opts or getattr(m, k) != implied[k]}
        opts |= {k: getattr(m, k) for k, v in linked[i].items() if getattr(m, k) != v}
        if i == 0 and _ffn_on_by_rule(layer, after) != (layer.ffn is not None):
            opts["ffn"] = layer.ffn is not None
        members.append(m.kind + ("(" + ", ".join(f"{k}={render(v)}" for k, v in opts.items()) + ")" if opts else ""))
    return "|".join(members)


def _compress(items: list[str]) -> str:
    n = len(items)
    for period in range(1, n // 2 + 1):
        if n % period == 0 and items[:period] * (n // period) == items:
            inner = _runs(items[:period])
            return inner + f" x{n // period}" if period == 1 else f"({inner}) x{n // period}"
    return _runs(items)


def _runs(items: list[str]) -> str:
    out, i = [], 0
    while i < len(items):
        j = i
        while j < len(items) and items[j] == items[i]:
            j += 1
        out.append(items[i] + (f" x{j - i}" if j - i > 1 else ""))
        i = j
    return " ".join(out)


def dumps(model: Model) -> str:
    """Canonical text of a model."""
    lines = [f"model {_name(model.name)}", f"dim {model.dim}"]
    lines.append(f"vocab {model.vocab}" if model.vocab is not None else f"input {model.input}")
    if model.pad_token is not None:
        lines.append(f"pad_token {model.pad_token}")
    norm = "".join(f" {k}={render(v)}" for k, v in model_norm(model).items())  # eps, zero_centered, place
    lines += [f"output {model.output}", f"norm {model.norm}{norm}", f"dropout {render(model.dropout)}"]
    if model.tie_embeddings:
        lines.append("tie_embeddings true")
    if model.meta_tokens:
        lines.append(f"meta_tokens {model.meta_tokens}")
    if model.fusion != "gate":
        lines.append(f"fusion {model.fusion}")
    lines += [f"{k} {render(v)}" for k, v in model_scales(model).items()]
    ffn_line, after, ffn_spec, ffn_written = _ffn_line(model)
    if ffn_line:
        lines.append(ffn_line)
    moe_line, placement = _moe_line(model, ffn_spec, ffn_written)
    if moe_line:
        lines.append(moe_line)
    kind_lines, base = _kind_lines(model)
    lines += kind_lines
    linked = linked_values(model.layers)  # what `auto` gives: the text need not say it
    items = [_item(l, base, after, [linked.get((i, j), {}) for j in range(len(l.mixers))], model.dim)
             for i, l in enumerate(model.layers)]
    lines.append("layers " + _compress(items))
    lines += share_statements(model)  # `share attn`, or with a shared block's options (hybridc/sharing.py)
    for i, layer in enumerate(model.layers):
        if layer.ffn is None:
            continue
        default = default_ffn(layer.mixers, ffn_spec)
        if placement and not _own_ffn(layer) and placed(i, placement[0], placement[1]):
            default = placement[2]
        keys = ("mult", "act", "gated", "bias", "hidden", "token_shift", "gate_scale", "down_scale", *MOE_KEYS)
        diff = {k: getattr(layer.ffn, k) for k in keys if getattr(layer.ffn, k) != getattr(default, k)}
        if diff:
            lines.append(f"at {i + 1} ffn " + " ".join(f"{k}={render(v)}" for k, v in diff.items()))
    places: dict = {}  # layers whose norms sit elsewhere than the model's (`at N norm place=...`)
    for i, layer in enumerate(model.layers):
        if layer.norm_place is not None:
            places.setdefault(layer.norm_place, []).append(str(i + 1))
    lines += [f"at {','.join(ix)} norm place={place}" for place, ix in places.items()]
    return "\n".join(lines) + "\n"
