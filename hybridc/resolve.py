"""Statements -> a resolved `Model`: layout, mode, per-kind defaults, overrides, FFNs, sharing, meta tokens.

Precedence for one layer option: the spec's default < `KIND key=value` statement < inline item option < `at` override.
A preset's statements come first; any user statement of the same setting replaces the preset's.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import ValidationError

from .errors import ErrorList, HybridcError, Pos, suggest
from .ir import FFNSpec, Layer, Model
from .kinds import NAMES, linked_values, spec_class
from .kinds._ffn import AFTER as FFN_AFTER
from .kinds._ffn import MOE_KEYS, default_ffn, ffn_on_by_rule, ffn_options, placed, placed_options
from .kinds._ffn import PLACE_KEYS as FFN_PLACE
from .layout import MAX_LAYERS, Layout, Member, build_layout, check_kind
from .options import convert, is_auto, read_int
from .parse import KV, AtStmt, GenericStmt, LayersStmt, Pair, PatternStmt, PresetStmt, Program, ShareStmt, Value, parse
from .presets import PRESETS
from .sharing import OPTIONS as SHARE_OPTIONS
from .sharing import place_sites
from .sharing import read_options as read_share_options

SETTINGS = {  # statement -> (IR field, how it is written)
    "model": "name", "dim": "dim", "input": "input", "vocab": "vocab", "pad_token": "pad_token", "output": "output",
    "norm": "norm", "dropout": "dropout", "meta_tokens": "meta_tokens", "fusion": "fusion",
    "tie_embeddings": "tie_embeddings",
    "embed_scale": "embed_scale", "residual_scale": "residual_scale", "logit_scale": "logit_scale",
    "logit_softcap": "logit_softcap",
}
NORM_KEYS = {"eps": "norm_eps", "zero_centered": "norm_zero_centered", "place": "norm_place"}  # `norm ... key=value`
FFN_KEYS = {k: FFNSpec.model_fields[k] for k in ("mult", "act", "gated", "bias", "hidden", "gate_scale", "down_scale",
                                                  *MOE_KEYS)}
STATEMENTS = sorted(set(SETTINGS) | {"parallel", "ffn", "layers", "pattern", "preset", "share", "at"} | set(NAMES))


@dataclass
class _Settings:
    """What the statements say, before the layers are built; each entry keeps its position."""

    values: dict = field(default_factory=dict)        # IR field -> (python value, Pos)
    kind_opts: dict = field(default_factory=dict)     # kind -> {option: (Value, Pos)}
    ffn: dict = field(default_factory=dict)           # mult/act/after -> (Value, Pos)
    parallel: Pos | None = None
    layers: LayersStmt | None = None
    pattern: PatternStmt | None = None
    share: list = field(default_factory=list)         # [Value]
    share_opts: dict = field(default_factory=dict)    # kind -> {option: (value, KV)} (hybridc/sharing.py)
    at: list = field(default_factory=list)            # [AtStmt]
    moe_place: dict = field(default_factory=dict)     # `moe every=K offset=O`: every/offset -> (int, Pos)


def _set(table: dict, key, item, pos: Pos, what: str, user_keys: set):
    """Set once per origin: a user statement replaces a preset's, twice in the user's text is an error."""
    if key in table and key in user_keys:
        raise HybridcError(f"{what} is set twice", pos)
    table[key] = item
    if pos.origin is None:
        user_keys.add(key)


class Resolver:
    def __init__(self, program: Program):
        self.program = program
        self.errors: list[HybridcError] = []
        self.s = _Settings()
        self._user: set = set()
        self._model_auto: dict = {}  # (layer, mixer) -> the MODEL_AUTO options left `auto` there (settled by `link`)
        self._kv_reuse_at: dict = {}  # (layer, mixer) -> where its attn kv_reuse option was written
        self._placed_any = False  # whether `moe every=K offset=O` made any layer's FFN an MoE

    # --- statements ----------------------------------------------------------------------------------------------
    def run(self) -> Model:
        stmts = list(self.program.statements)
        presets = [s for s in stmts if isinstance(s, PresetStmt)]
        if len(presets) > 1:
            raise HybridcError("more than one preset", presets[1].pos)
        if presets:
            p = presets[0]
            if p.name not in PRESETS:
                raise HybridcError(f"unknown preset '{p.name}'", p.name_pos,
                                   hint=suggest(p.name, PRESETS) or f"presets: {', '.join(PRESETS)}")
            name = f"<preset {p.name}>"
            stmts = parse(PRESETS[p.name], name, origin=name).statements + [s for s in stmts if s is not p]
        for st in stmts:
            self._guard(self._statement, st)
        if self.errors:
            raise ErrorList(self.errors) if len(self.errors) > 1 else self.errors[0]
        return self._model()

    def _guard(self, fn, *args):
        try:
            return fn(*args)
        except HybridcError as e:
            if not any(e.message == x.message and e.pos == x.pos for x in self.errors):
                self.errors.append(e)
            return None

    def _statement(self, st):
        if isinstance(st, LayersStmt) and _parallel_word(st):  # `6 layers parallel`: the seeds' mode: :parallel
            self._layout(LayersStmt(st.count, "none", pos=st.pos))
            self._parallel(GenericStmt("parallel", (), st.items[0].pos), [], [])
        elif isinstance(st, (LayersStmt, PatternStmt)):
            self._layout(st)
        elif isinstance(st, ShareStmt):
            self.s.share.extend(st.kinds)
            if st.options:
                self.s.share_opts[st.kinds[0].raw] = read_share_options(st)
        elif isinstance(st, AtStmt):
            self.s.at.append(st)
        elif isinstance(st, GenericStmt):
            self._generic(st)

    def _layout(self, st):
        slot = "pattern" if isinstance(st, PatternStmt) else "layers"
        if isinstance(st, LayersStmt) and st.layout == "none" and self.s.pattern is not None:
            self.s.layers = st  # `N layers` next to a pattern: a count to check
            return
        prev = self.s.layers if self.s.layers is not None and self.s.layers.layout != "none" else self.s.pattern
        if slot == "layers" and st.layout == "none" and self.s.layers is None and self.s.pattern is None:
            self.s.layers = st
            return
        if prev is not None and prev.pos.origin is None and st.pos.origin is None:
            raise HybridcError(f"a second layout (the first is at line {prev.pos.line})", st.pos,
                               hint="a model has exactly one layout")
        if prev is not None or (self.s.layers is not None and self.s.layers.pos.origin is not None):
            self.s.layers, self.s.pattern = None, None  # the user's layout replaces the preset's
        if slot == "pattern":
            self.s.pattern = st
        else:
            self.s.layers = st

    def _generic(self, st: GenericStmt):
        values = [a for a in st.args if isinstance(a, Value)]
        kvs = [a for a in st.args if isinstance(a, KV)]
        if st.name == "norm":
            self._norm(st, values, kvs)
        elif st.name in SETTINGS:
            if kvs or len(values) != 1:
                raise HybridcError(f"'{st.name}' takes exactly one value, e.g. `{st.name} {_EXAMPLE[st.name]}`", st.pos)
            self._setting(SETTINGS[st.name], values[0], st.pos)
        elif st.name == "parallel":
            self._parallel(st, values, kvs)
        elif st.name == "ffn":
            self._ffn(st, values, kvs)
        elif st.name == "moe" and any(kv.key in FFN_PLACE for kv in kvs):
            self._moe_place(st, values, kvs)
        elif st.name in NAMES:
            if values:
                raise HybridcError(f"options for {st.name} are written key=value", values[0].pos)
            if not kvs:
                raise HybridcError(f"'{st.name}' alone sets nothing; write options like `{_kind_example(st.name)}`", st.pos)
            for kv in kvs:
                self._guard(self._kind_opt, st.name, kv)
        else:
            raise HybridcError(f"unknown statement '{st.name}'", st.pos, hint=suggest(st.name, STATEMENTS))

    def _setting(self, fld: str, v: Value, pos: Pos):
        info = Model.model_fields[fld]
        value = v.raw if fld == "name" else convert(v, info, _WORD.get(fld, fld))
        _set(self.s.values, fld, (value, v.pos), pos, f"'{_WORD[fld]}'", self._user)

    def _norm(self, st, values, kvs):
        """`norm layer|rms eps=E zero_centered=true place=pre|post|both`: the kind and/or its options."""
        if len(values) > 1 or not (values or kvs):
            raise HybridcError(f"'norm' takes a kind and/or options, e.g. `norm {_EXAMPLE['norm']}`",
                               values[1].pos if len(values) > 1 else st.pos)
        if values:
            self._setting("norm", values[0], st.pos)
        for kv in kvs:
            if kv.key not in NORM_KEYS:
                raise HybridcError(f"unknown option '{kv.key}' for norm", kv.pos,
                                   hint=suggest(kv.key, NORM_KEYS) or f"valid: {', '.join(NORM_KEYS)}")
            self._setting(NORM_KEYS[kv.key], kv.value, kv.pos)

    def _parallel(self, st, values, kvs):
        if values:
            raise HybridcError("parallel takes options key=value (meta_tokens=K, fusion=gate|mean|sum|hymba)", values[0].pos)
        _set(self.s.values, "_parallel", (True, st.pos), st.pos, "'parallel'", self._user)
        for kv in kvs:
            if kv.key not in ("meta_tokens", "fusion"):
                raise HybridcError(f"unknown option '{kv.key}' for parallel", kv.pos,
                                   hint=suggest(kv.key, ["meta_tokens", "fusion"]) or "valid: meta_tokens, fusion")
            self._setting(kv.key, kv.value, kv.pos)

    def _ffn(self, st, values, kvs):
        if values:
            raise HybridcError(f"ffn takes options key=value ({', '.join(FFN_KEYS)}, after)", values[0].pos)
        for kv in kvs:
            if kv.key == "after":
                if kv.value.raw not in FFN_AFTER:
                    raise HybridcError(f"invalid value '{kv.value.raw}' for after; expected attn, all or none",
                                       kv.value.pos, hint=suggest(kv.value.raw, FFN_AFTER))
                value = kv.value.raw
            elif kv.key in FFN_KEYS:
                value = convert(kv.value, FFN_KEYS[kv.key], kv.key)
            else:
                raise HybridcError(f"unknown option '{kv.key}' for ffn", kv.pos,
                                   hint=suggest(kv.key, [*FFN_KEYS, "after"]) or f"valid: {', '.join(FFN_KEYS)}, after")
            _set(self.s.ffn, kv.key, (value, kv.value.pos), kv.pos, f"ffn {kv.key}", self._user)
        try:
            FFNSpec(**self._model_ffn())
        except (ValidationError, ValueError) as e:
            if isinstance(e, ValidationError):
                loc = e.errors()[0].get("loc") or ()
                where = self.s.ffn.get(loc[0], (None, None))[1] if loc else None
                raise HybridcError(f"ffn {loc[0] if loc else ''}: {_first_msg(e)}".replace(" :", ":"),
                                   where or (kvs[0] if kvs else st).pos) from None
            raise HybridcError(f"ffn: {e}", (kvs[0] if kvs else st).pos) from None

    def _moe_place(self, st, values, kvs):
        """`moe every=K offset=O key=value...`: the FFNs of layers i (0-based) with i % K == O become MoEs with these
        options (the model's `ffn` options, then these); the options also set the `moe` kind's defaults."""
        if values:
            raise HybridcError("options for moe are written key=value", values[0].pos)
        for kv in kvs:
            if kv.key in FFN_PLACE:
                n = read_int(kv.value, f"moe {kv.key}", 1 if kv.key == "every" else 0, MAX_LAYERS)
                _set(self.s.moe_place, kv.key, (n, kv.value.pos), kv.pos, f"moe {kv.key}", self._user)
            else:
                self._guard(self._kind_opt, "moe", kv)
        every, at = self.s.moe_place.get("every", (1, st.pos))
        offset, where = self.s.moe_place.get("offset", (0, st.pos))
        if offset >= every:
            raise HybridcError(f"moe offset={offset} must be below every={every}", where,
                               hint="valid: moe every=K offset=O with 0 <= O < K (layer i, 0-based, gets the MoE when "
                               "i % K == O)")

    def _model_ffn(self) -> dict:
        """The options the `ffn` statements wrote (the model's FFN before defaults)."""
        return {k: val for k, (val, _) in self.s.ffn.items() if k in FFN_KEYS}

    def _kind_opt(self, kind: str, kv: KV):
        value = _option_value(kind, kv)
        _set(self.s.kind_opts.setdefault(kind, {}), kv.key, (value, kv.value.pos), kv.pos, f"{kind} {kv.key}",
             {k[len(kind) + 1:] for k in self._user if k.startswith(kind + ":")})
        if kv.pos.origin is None:
            self._user.add(f"{kind}:{kv.key}")

    # --- the model -----------------------------------------------------------------------------------------------
    def _model(self) -> Model:
        v = {k: val for k, (val, _) in self.s.values.items() if not k.startswith("_")}
        dim = v.get("dim", Model.model_fields["dim"].default)
        if v.get("input") is None and v.get("vocab") is None:
            v["input"] = dim
        lay = build_layout(self.s.layers, self.s.pattern)
        slots = self._parallelise(lay)
        for at in self.s.at:
            self._guard(_check_ranges, at, len(slots))
        layers = []
        for i, slot in enumerate(slots):
            layers.append(self._guard(self._layer, i, slot, dim))
        if self.s.moe_place and not self._placed_any and not self.errors:
            every, offset = (self.s.moe_place.get(k, (d, None))[0] for k, d in (("every", 1), ("offset", 0)))
            self._guard(_raise, f"moe every={every} offset={offset}: no layer with an FFN sub-block is at such an "
                        "index", self._place_pos())
        if self.errors:
            raise ErrorList(self.errors) if len(self.errors) > 1 else self.errors[0]
        layers = _link(layers, self._model_auto)
        self._hymba_checks(layers, v.get("fusion"), dim)
        layers, share = self._share(layers)
        try:
            return Model(**v, share=share, layers=tuple(layers))
        except ValidationError as e:
            raise self._model_error(e) from None

    def _hymba_checks(self, layers, fusion, dim: int):
        """Hymba's fused blocks and cross-layer KV sharing (hybridc/hymba.py), located at the fusion setting and at
        the kv_reuse options."""
        from .hymba import fusion_problem, kv_reuse_problems

        for i, l in enumerate(layers if fusion == "hymba" else ()):
            msg = l.parallel and fusion_problem(l, dim)
            if msg:
                self._guard(_raise, f"layer {i + 1}: {msg}", self.s.values["fusion"][1])
        for i, j, msg in kv_reuse_problems(layers, fusion or "gate", dim):
            self._guard(_raise, f"layer {i + 1}: {msg}", self._kv_reuse_at.get((i, j), layers_pos(self.s)))
        if self.errors:
            raise ErrorList(self.errors) if len(self.errors) > 1 else self.errors[0]

    def _parallelise(self, lay: Layout) -> list:
        if "_parallel" not in self.s.values:
            return lay.slots
        pos = self.s.values["_parallel"][1]
        if not lay.explicit:
            return [(Member(lay.backbone, (), pos), Member("attn", (), pos)) for _ in lay.slots]
        out = [(Member(lay.backbone, (), s[0].pos), s[0]) if len(s) == 1 and spec_class(s[0].kind).ROLE == "attention"
               else s for s in lay.slots]
        if out == lay.slots:
            raise HybridcError("parallel: the layout has no attention layer to turn into a parallel block", pos)
        return out

    def _layer(self, index: int, slot, dim: int) -> Layer:
        overrides = self._overrides(index, slot)
        ffn_flag = None
        mixers = []
        for m in slot:
            opts = {k: val for k, (val, _) in self.s.kind_opts.get(m.kind, {}).items()}
            where = {k: p for k, (_, p) in self.s.kind_opts.get(m.kind, {}).items()}
            for kv in list(m.options) + overrides.get(m.kind, []):
                if kv.key == "ffn":
                    ffn_flag = convert(kv.value, _FFN_FLAG, "ffn")
                    continue
                opts[kv.key] = _option_value(m.kind, kv)
                where[kv.key] = kv.value.pos
            left = {n for n in spec_class(m.kind).MODEL_AUTO if opts.get(n, "auto") == "auto"}
            if left:
                self._model_auto[(index, len(mixers))] = left
            if "kv_reuse" in where:
                self._kv_reuse_at[(index, len(mixers))] = where["kv_reuse"]
            mixers.append(_spec(m, opts, where, dim))
        ffn = self._ffn_for(mixers, ffn_flag, overrides.get("ffn", []), slot[0].pos, index)
        place = self._layer_place(overrides.get("norm", []))
        return Layer(mixers=tuple(mixers), ffn=ffn, **({"norm_place": place} if place else {}))

    def _layer_place(self, kvs) -> str | None:
        """`at N norm place=pre|post|both`: the layer's norm placement, kept where it differs from the model's."""
        place = None
        for kv in kvs:
            if kv.key != "place":
                raise HybridcError(f"'{kv.key}' is model-wide (`norm {kv.key}=...`); a layer sets only its norm place",
                                   kv.pos, hint="valid: at N norm place=pre|post|both")
            place = convert(kv.value, Model.model_fields["norm_place"], "norm place")
        model = self.s.values.get("norm_place", (Model.model_fields["norm_place"].default, None))[0]
        return None if place in (None, model) else place

    def _overrides(self, index: int, slot) -> dict:
        out: dict = {}
        kinds = {m.kind for m in slot}
        for at in self.s.at:
            if not any(_int(lo) - 1 <= index <= _int(hi) - 1 for lo, hi in at.ranges):
                continue
            if at.kind.raw not in kinds | {"ffn", "norm"}:
                check_kind(at.kind.raw, at.kind.pos, list(NAMES) + ["ffn", "norm"])
                raise HybridcError(f"layer {index + 1} is '{'|'.join(m.kind for m in slot)}', it has no {at.kind.raw}",
                                   at.kind.pos)
            out.setdefault(at.kind.raw, []).extend(at.options)
        return out

    def _ffn_for(self, mixers, flag, ffn_kvs, pos: Pos, index: int = 0):
        after = self.s.ffn.get("after", ("attn", None))[0]
        if len(mixers) == 1 and not mixers[0].TAKES_FFN:
            if flag or ffn_kvs:
                raise HybridcError(f"a {mixers[0].kind} layer takes no FFN sub-block", pos)
            return None
        default = default_ffn(mixers, FFNSpec(**self._model_ffn()))
        on = ffn_on_by_rule(mixers, after) if flag is None else flag
        if not on:
            if ffn_kvs:
                raise HybridcError("this layer has no FFN to override", ffn_kvs[0].pos, hint="add ffn=true")
            return None
        moe = self._placed(mixers, index)
        if not ffn_kvs and moe is None:
            return default
        opts = ffn_options(mixers, self._model_ffn())
        where = {k: p for k, (_, p) in self.s.ffn.items()}  # where each option was written: ffn, moe, at N ffn
        if moe is not None:  # `moe every=K offset=O`: this layer's FFN is an MoE
            self._placed_any = True
            opts = placed_options(opts, {k: v for k, (v, _) in moe.items()})
            where |= {k: p for k, (_, p) in moe.items()}
        for kv in ffn_kvs:
            if kv.key not in FFNSpec.model_fields:
                raise HybridcError(f"unknown option '{kv.key}' for ffn", kv.pos, hint=suggest(kv.key, FFNSpec.model_fields))
            opts[kv.key] = convert(kv.value, FFNSpec.model_fields[kv.key], kv.key)
            where[kv.key] = kv.value.pos
        first = ffn_kvs[0] if ffn_kvs else None
        label = "ffn" if moe is None else f"ffn of layer {index + 1} (moe every=...)"
        try:
            return FFNSpec(**opts)
        except ValidationError as e:
            loc = e.errors()[0].get("loc") or ()
            at = where.get(loc[0]) if loc else None
            raise HybridcError(f"{label}: {_first_msg(e)}", at or (first.value.pos if first else self._place_pos())) \
                from None
        except ValueError as e:
            raise HybridcError(f"{label}: {e}", first.pos if first else self._place_pos()) from None

    def _placed(self, mixers, index: int) -> dict | None:
        """The `moe` statement's options {key: (value, Pos)} when `moe every=K offset=O` places an MoE in layer
        `index`'s FFN (the model's FFN; a kind's own FFN, RWKV-7's channel mix, stays), else None."""
        if not self.s.moe_place or (len(mixers) == 1 and mixers[0].OWN_FFN is not None):
            return None
        every, offset = (self.s.moe_place.get(k, (d, None))[0] for k, d in (("every", 1), ("offset", 0)))
        if not placed(index, every, offset):
            return None
        return {k: v for k, v in self.s.kind_opts.get("moe", {}).items() if k in FFNSpec.model_fields}

    def _place_pos(self) -> Pos:
        return next(iter(self.s.moe_place.values()))[1]

    def _share(self, layers):
        kinds = []
        for v in self.s.share:
            check_kind(v.raw, v.pos)
            hit = [l for l in layers if l.kind == v.raw]
            if not hit:
                raise HybridcError(f"share {v.raw}: no layer is a plain '{v.raw}' layer", v.pos,
                                   hint="parallel blocks cannot be shared")
            if any(l != hit[0] for l in hit):
                raise HybridcError(f"share {v.raw}: the '{v.raw}' layers differ in their options, so they cannot share weights",
                                   v.pos)
            if v.raw in kinds:
                raise HybridcError(f"{v.raw} is shared twice", v.pos)
            kinds.append(v.raw)
        layers = [l.model_copy(update={"shared": True}) if l.kind in kinds else l for l in layers]
        place = self.s.values.get("norm_place", ("pre", None))[0]
        for kind, opts in self.s.share_opts.items():
            layers = place_sites(layers, kind, opts, place) if kind in kinds else layers
        return layers, tuple(kinds)

    def _model_error(self, e: ValidationError) -> HybridcError:
        err = e.errors()[0]
        loc = err.get("loc") or ()
        fld = loc[0] if loc else None
        if fld in self.s.values:
            return HybridcError(f"{_WORD.get(fld, fld)}: {_clean(err['msg'])}", self.s.values[fld][1])
        msg = _clean(err["msg"])
        if "tie_embeddings" in msg and "tie_embeddings" in self.s.values:
            return HybridcError(msg, self.s.values["tie_embeddings"][1],
                                hint="set `vocab N` and `output logits`, or remove tie_embeddings")
        if msg.startswith("pad_token") and "pad_token" in self.s.values:
            vocab = self.s.values.get("vocab", (None,))[0]
            return HybridcError(msg, self.s.values["pad_token"][1], hint="the padding row of the token embedding: set "
                                "`vocab N`, or remove pad_token" if vocab is None else f"valid: 0..{vocab - 1} or none")
        scale = next((n for n in ("logit_scale", "logit_softcap") if msg.startswith(n) and n in self.s.values), None)
        if scale is not None:
            return HybridcError(msg, self.s.values[scale][1], hint="set `vocab N` and `output logits`, or remove "
                                f"{scale}")
        if "meta tokens" in msg:
            pos = self.s.values.get("meta_tokens", (None, Pos(1, 1)))[1]
        elif "logits" in msg:
            pos = self.s.values.get("output", (None, Pos(1, 1)))[1]
        else:
            pos = self.s.values.get("vocab", self.s.values.get("input", (None, Pos(1, 1))))[1]
        return HybridcError(msg, pos)


_EXAMPLE = {"model": "my_model", "dim": "256", "input": "32", "vocab": "32000", "pad_token": "0", "output": "last",
            "norm": "rms eps=1e-5 zero_centered=true place=both",
            "dropout": "0.1", "meta_tokens": "4", "fusion": "mean",
            "tie_embeddings": "true", "embed_scale": "12", "residual_scale": "0.22", "logit_scale": "0.125",
            "logit_softcap": "30"}
_WORD = {v: k for k, v in SETTINGS.items()} | {v: f"norm {k}" for k, v in NORM_KEYS.items()}
_FFN_FLAG = Layer.model_fields["shared"]  # a bool field, used to read `ffn=true|false`


def _kind_example(kind: str) -> str:
    name, fld = next((n, f) for n, f in spec_class(kind).model_fields.items() if n != "kind")
    return f"{kind} {name}={'auto' if is_auto(fld) else fld.default}"


def _int(v: Value) -> int:
    return read_int(v, "a layer index")


def _parallel_word(st: LayersStmt) -> bool:
    """`N layers parallel`: one bare item named `parallel` (not a kind) is the mode, as the seeds' `mode: :parallel`."""
    if st.layout != "items" or len(st.items) != 1 or st.items[0].repeat != 1:
        return False
    atom = st.items[0].atom
    return isinstance(atom, Pair) and len(atom.members) == 1 and atom.members[0].kind == "parallel" \
        and not atom.members[0].options


def _check_ranges(at: AtStmt, n: int):
    for lo, hi in at.ranges:
        a, b = _int(lo), _int(hi)
        if a > b:
            raise HybridcError(f"empty range {a}..{b}", lo.pos)
        if b > n:
            bad = hi if b > n else lo
            raise HybridcError(f"layer {b} is out of range: the model has {n} layers (1-based)", bad.pos)


def _option_value(kind: str, kv: KV):
    fields = {k: f for k, f in spec_class(kind).model_fields.items() if k != "kind"}
    if kv.key == "ffn":
        return convert(kv.value, _FFN_FLAG, "ffn")
    if kv.key not in fields:
        from .options import type_text

        valid = "; ".join(f"{n}: {type_text(f)}" for n, f in fields.items())
        hint = suggest(kv.key, fields)
        if kv.key in SHARE_OPTIONS:  # e.g. LoRA adapters without a shared block
            hint = f"{kv.key} is an option of a shared block: `share {kind} {kv.key}=...`" + (f"; {hint}" if hint else "")
        raise HybridcError(f"unknown option '{kv.key}' for {kind}", kv.pos,
                           hint=(hint + "\n  " if hint else "") + f"valid options: {valid}")
    return convert(kv.value, fields[kv.key], f"{kind} {kv.key}")


def _clean(msg: str) -> str:
    return msg.removeprefix("Value error, ")


def _first_msg(e: ValidationError) -> str:
    return _clean(e.errors()[0]["msg"])


def _spec(m: Member, opts: dict, where: dict, dim: int):
    cls = spec_class(m.kind)
    for name, fld in cls.model_fields.items():
        if is_auto(fld):
            opts.setdefault(name, "auto")
    try:
        opts = cls.resolve(dict(opts), dim)
    except ValueError as e:
        raise HybridcError(f"{m.kind}: {e}", m.pos) from None
    try:
        return cls(**opts)
    except ValidationError as e:
        err = e.errors()[0]
        loc = err.get("loc") or ()
        key = loc[0] if loc and loc[0] in where else next((k for k in ("kv_heads", "heads", "head_dim") if k in where), None)
        pos = where.get(key, m.pos)
        label = f"{m.kind} {loc[0]}" if loc else m.kind
        return _raise(f"{label}: {_clean(err['msg'])}", pos)


def layers_pos(s: _Settings) -> Pos:
    """Where the layout was written (for errors about layers that no option of theirs names)."""
    st = s.layers or s.pattern
    return st.pos if st is not None else Pos(1, 1)


def _raise(msg, pos):
    raise HybridcError(msg, pos)


def _link(layers, auto: dict):
    """Settle the options each kind resolves from its place in the model (`KindSpec.link`, e.g. RWKV-7's value
    residual), for the mixers where they were left `auto`."""
    updates = {}
    for (i, j), values in linked_values(layers).items():
        keep = {k: v for k, v in values.items() if k in auto.get((i, j), ())}
        if keep:
            updates[(i, j)] = keep
    out = []
    for i, l in enumerate(layers):
        mixers = tuple(m.model_copy(update=updates[(i, j)]) if (i, j) in updates else m for j, m in enumerate(l.mixers))
        out.append(l.model_copy(update={"mixers": mixers}) if mixers != l.mixers else l)
    return out


def load(text: str, source_name: str = "<string>") -> Model:
    """Parse and resolve `.hyb` text into a `Model`; every user mistake raises `HybridcError` with its position."""
    try:
        return Resolver(parse(text, source_name)).run()
    except ErrorList as e:
        raise ErrorList([x.located(text, source_name) for x in e.errors]) from None
    except HybridcError as e:
        raise e.located(text, source_name) from None
