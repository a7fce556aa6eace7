"""Layout statements -> slots: one entry per layer, each a tuple of (kind, inline options, position) members.

Ratio/every/pattern/explicit items all end here; nothing about options is decided yet.
"""
from __future__ import annotations

from dataclasses import dataclass

from . import schedule as sch
from .errors import HybridcError, Pos, suggest
from .kinds import NAMES, kinds_with_role, pattern_symbols, spec_class
from .options import read_int
from .parse import Item, KV, LayersStmt, Pair, PatternStmt, Value

MAX_LAYERS = 10_000
DEFAULT_LAYERS = 6


@dataclass(frozen=True)
class Member:
    kind: str
    options: tuple[KV, ...]
    pos: Pos


Slot = tuple[Member, ...]


@dataclass(frozen=True)
class Layout:
    slots: list          # list[Slot]
    backbone: str        # the kind a `parallel` statement pairs with attention
    explicit: bool       # False for `N layers` alone (and no layers statement)


def _int(v: Value, what: str, lo: int = 1, hi: int = MAX_LAYERS) -> int:
    return read_int(v, what, lo, hi, hint="hybridc supports at most 10,000 layers" if hi == MAX_LAYERS else None)


def check_kind(kind: str, pos: Pos, allowed=None) -> str:
    allowed = list(allowed or NAMES)
    if kind not in allowed:
        raise HybridcError(f"unknown layer kind '{kind}'", pos, hint=suggest(kind, allowed) or f"valid kinds: {', '.join(allowed)}")
    return kind


def _opts(st: LayersStmt, allowed: dict) -> dict:
    seen = {}
    for o in st.opts:
        if o.key not in allowed:
            raise HybridcError(f"'{o.key}' does not apply to a {st.layout} layout", o.pos,
                               hint=f"{st.layout} takes: {', '.join(allowed)}")
        if o.key in seen:
            raise HybridcError(f"'{o.key}' is given twice", o.pos)
        seen[o.key] = o.value
    return seen


def _backbone(opts: dict) -> str:
    v = opts.get("backbone")
    if v is None:
        return "mamba"
    if v.raw in NAMES and spec_class(v.raw).ROLE == "backbone":  # imports only this kind's module
        return v.raw
    return check_kind(v.raw, v.pos, kinds_with_role("backbone"))


def _fill(n: int, positions: list[int], backbone: str, pos: Pos) -> list:
    attn = set(positions)
    return [(Member("attn" if i in attn else backbone, (), pos),) for i in range(n)]


def _count(st: LayersStmt) -> int:
    return _int(st.count, "the layer count") if st.count is not None else DEFAULT_LAYERS


def ratio_layout(st: LayersStmt) -> Layout:
    opts = _opts(st, {"backbone": 1, "placement": 1})
    n = _count(st)
    a = _int(st.numbers[0], "the backbone share", 0, 10**9)
    b = _int(st.numbers[1], "the attention share", 0, 10**9)
    if a + b == 0:
        raise HybridcError("ratio 0:0 gives no layers", st.numbers[0].pos)
    if b == 0:
        raise HybridcError("a ratio with 0 attention has no attention layer", st.numbers[1].pos,
                           hint="write `N layers every ...` or an explicit `layers ...` list")
    place = opts.get("placement")
    rule = place.raw if place is not None else "spread"
    if rule not in ("spread", "megatron"):
        raise HybridcError(f"unknown placement '{rule}'", place.pos, hint=suggest(rule, ["spread", "megatron"]) or
                           "placement is spread or megatron")
    fn = sch.spread_positions if rule == "spread" else sch.megatron_positions
    backbone = _backbone(opts)
    return Layout(_fill(n, fn(n, a, b), backbone, st.pos), backbone, True)


def every_layout(st: LayersStmt) -> Layout:
    opts = _opts(st, {"backbone": 1, "offset": 1})
    n = _count(st)
    k = _int(st.numbers[0], "every", 1, 10**9)
    off = opts.get("offset")
    o = k - 1 if off is None else _int(off, "offset", 0, 10**9)
    if o >= k:
        raise HybridcError(f"offset {o} must be below every={k}", off.pos)
    backbone = _backbone(opts)
    return Layout(_fill(n, sch.every_positions(n, k, o), backbone, st.pos), backbone, True)


def default_layout(st: LayersStmt | None) -> Layout:
    n = _count(st) if st is not None else DEFAULT_LAYERS
    pos = st.pos if st is not None else Pos(1, 1)
    return Layout(_fill(n, sch.every_positions(n, 4, 3), "mamba", pos), "mamba", False)


def _size(items, budget: int) -> int:
    total = 0
    for it in items:
        inner = 1 if isinstance(it.atom, Pair) else _size(it.atom, budget)
        total += inner * it.repeat
        if total > budget:
            raise HybridcError(f"more than {budget:,} layers", it.pos, hint="hybridc supports at most 10,000 layers")
    return total


def _expand(items) -> list:
    out = []
    for it in items:
        if it.repeat < 1:
            raise HybridcError("a repeat count must be at least 1", it.pos)
        body = [tuple(Member(s.kind, s.options, s.pos) for s in it.atom.members)] if isinstance(it.atom, Pair) \
            else _expand(it.atom)
        out.extend(body * it.repeat)
    return out


def _most_common_backbone(slots) -> str:
    counts = {}
    for slot in slots:
        for m in slot:
            if spec_class(m.kind).ROLE == "backbone":
                counts[m.kind] = counts.get(m.kind, 0) + 1
    return max(counts, key=lambda k: counts[k]) if counts else "mamba"


def _check_pair(slot) -> None:
    """A parallel block is a backbone kind and attention side by side (Hymba's heads), written `backbone|attn`."""
    roles = [spec_class(m.kind).ROLE for m in slot]
    if roles == ["backbone", "attention"]:
        return
    a, b = slot[0].kind, slot[1].kind
    if a == b:
        raise HybridcError(f"a parallel block of two '{a}' mixers", slot[1].pos, hint=_pair_forms())
    if "mlp" in roles:
        raise HybridcError("mlp cannot be a parallel branch", slot[roles.index("mlp")].pos, hint=_pair_forms())
    if roles == ["attention", "backbone"]:
        raise HybridcError(f"a parallel block is written backbone first: '{b}|{a}'", slot[0].pos, hint=f"write {b}|{a}")
    bad = slot[1] if roles[0] == "backbone" else slot[0]
    raise HybridcError(f"'{a}|{b}' is not a parallel block: it pairs a backbone kind with attention", bad.pos,
                       hint=_pair_forms())


def _pair_forms() -> str:
    return (f"valid forms: BACKBONE|{kinds_with_role('attention')[0]} with BACKBONE one of "
            f"{', '.join(kinds_with_role('backbone'))}")


def items_layout(st: LayersStmt) -> Layout:
    n = _size(st.items, MAX_LAYERS)
    slots = _expand(st.items)
    for slot in slots:
        for m in slot:
            check_kind(m.kind, m.pos)
        if len(slot) > 2:
            raise HybridcError("a parallel block holds at most two mixers", slot[2].pos)
        if len(slot) == 2:
            _check_pair(slot)
    if st.count is not None and _int(st.count, "the layer count") != n:
        raise HybridcError(f"{st.count.raw} layers given, but the list has {n}", st.count.pos)
    return Layout(slots, _most_common_backbone(slots), True)


def _supported(symbols: dict) -> str:
    return "supported symbols: " + ", ".join(f"{c} ({k})" for c, k in symbols.items())


def pattern_layout(st: PatternStmt, count: Value | None) -> Layout:
    slots, symbols = [], pattern_symbols()
    for i, ch in enumerate(st.text):
        pos = Pos(st.text_pos.line, st.text_pos.column + i, 1, st.text_pos.origin)
        if ch in symbols:
            slots.append((Member(symbols[ch], (), pos),))
        elif ch in sch.MEGATRON_UNSUPPORTED:
            raise HybridcError(f"Megatron symbol '{ch}' ({sch.MEGATRON_UNSUPPORTED[ch]}) is not supported", pos,
                               hint=_supported(symbols))
        elif ch.isspace():
            continue
        else:
            raise HybridcError(f"unknown pattern symbol '{ch}'", pos, hint=_supported(symbols))
        if len(slots) > MAX_LAYERS:
            raise HybridcError("more than 10,000 layers", st.text_pos)
    if not slots:
        raise HybridcError("an empty pattern gives no layers", st.text_pos)
    if count is not None and _int(count, "the layer count") != len(slots):
        raise HybridcError(f"{count.raw} layers given, but the pattern has {len(slots)}", count.pos)
    return Layout(slots, _most_common_backbone(slots), True)


def build_layout(layers: LayersStmt | None, pattern: PatternStmt | None) -> Layout:
    if pattern is not None:
        if layers is not None and layers.layout != "none":
            raise HybridcError("two layouts: a pattern and a layers list", pattern.pos)
        return pattern_layout(pattern, layers.count if layers is not None else None)
    if layers is None or layers.layout == "none":
        return default_layout(layers)
    return {"ratio": ratio_layout, "every": every_layout, "items": items_layout}[layers.layout](layers)
