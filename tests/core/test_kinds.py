"""The layer kinds' registry and cost formulas, checked against closed forms (no torch, no jax).

The formulas in `hybridc/kinds/<kind>.py` are algebra; here every count is the sum of the tensor shapes that
docs/layers.md lists for the kind (written out independently), or a published model's parameter count.
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

import hybridc
from hybridc.kinds import NAMES, KindSpec, all_specs, kinds_with_role, pattern_symbols, spec_class
from hybridc.kinds._ffn import FFNSpec

ROOT = Path(__file__).resolve().parents[2]


def _spec(kind, dim, **options):
    cls = spec_class(kind)
    opts = {n: "auto" for n, f in cls.model_fields.items() if (f.json_schema_extra or {}).get("auto")}
    if kind == "rwkv":
        opts["value_residual"] = False   # the resolver decides it from the layer's place in the model
    return cls(**cls.resolve({**opts, **options}, dim))


def _numel(*shapes) -> int:
    return sum(math.prod(s) for s in shapes)


# kind, dim, options, the tensor shapes of docs/layers.md for that config
SHAPES = {
    "mamba-D24-N4-E2-K3": ("mamba", 24, {"state": 4, "expand": 2, "conv": 3},  # E 48, R ceil(24/16) = 2
                           [(96, 24), (48, 1, 3), (48,), (2 + 8, 48), (48, 2), (48,), (48, 4), (48,), (24, 48)]),
    "mamba-D24-I36-projbias-noconvbias": ("mamba", 24, {"state": 4, "conv": 3, "inner": 36, "proj_bias": True,
                                                        "conv_bias": False},  # inner wins over expand 2
                                          [(72, 24), (72,), (36, 1, 3), (2 + 8, 36), (36, 2), (36,), (36, 4), (36,),
                                           (24, 36), (24,)]),
    "mamba-D24-N4-weighted": ("mamba", 24, {"state": 4, "conv": 3, "inner_norm": "weighted", "eps": 1e-5},
                              [(96, 24), (48, 1, 3), (48,), (2 + 8, 48), (48, 2), (48,), (48, 4), (48,), (24, 48),
                               (2,), (4,), (4,)]),   # dt_layernorm, b_layernorm, c_layernorm
    "mamba-D24-N4-plain": ("mamba", 24, {"state": 4, "conv": 3, "inner_norm": "plain"},  # weightless norms
                           [(96, 24), (48, 1, 3), (48,), (2 + 8, 48), (48, 2), (48,), (48, 4), (48,), (24, 48)]),
    "mamba-D24-N4-H2": ("mamba", 24, {"state": 4, "conv": 3, "heads": 2},  # Zamba: per-head x_proj, dt_proj (P 24)
                        [(96, 24), (48, 1, 3), (48,), (2, 2 + 8, 24), (2, 24, 2), (2, 24), (2, 24, 4), (2, 24),
                         (24, 48)]),
    "mamba2-D32-N8-P16-G2": ("mamba2", 32, {"state": 8, "head_dim": 16, "groups": 2},  # E 64, H 4, X 64+32
                             [(64 + 96 + 4, 32), (96, 1, 4), (96,), (4,), (4,), (4,), (64,), (32, 64)]),
    "mamba2-D32-H3-P16-nonorm-projbias": ("mamba2", 32, {"state": 8, "heads": 3, "head_dim": 16, "out_norm": False,
                                                      "proj_bias": True},  # E 48 (not expand*dim), X 48+16
                                          [(48 + 64 + 3, 32), (115,), (64, 1, 4), (64,), (3,), (3,), (3,), (32, 48),
                                           (32,)]),   # no norm.weight
    "mamba2-D32-I64-P16-G2-noconvbias": ("mamba2", 32, {"state": 8, "inner": 64, "head_dim": 16, "groups": 2,
                                                     "norm_before_gate": True, "conv_bias": False},  # H 4
                                         [(64 + 96 + 4, 32), (96, 1, 4), (4,), (4,), (4,), (64,), (32, 64)]),
    "gru-D16-H24": ("gru", 16, {"hidden": 24}, [(72, 16), (72, 24), (72,), (72,), (16, 24)]),
    "gru-D16-auto": ("gru", 16, {}, [(48, 16), (48, 16), (48,), (48,)]),
    "griffin-D16-W32-M4-K4": ("griffin_lru", 16, {"width": 32, "heads": 4},
                              [(32, 16), (32,), (32, 16), (32,), (16, 32), (16,), (4, 32), (32,), (32,),
                               (4, 8, 8), (32,), (4, 8, 8), (32,)]),
    "attn-D32-H4-KV2-hd8": ("attn", 32, {"heads": 4, "kv_heads": 2, "head_dim": 8},
                            [(32, 32), (16, 32), (16, 32), (32, 32), (8,), (8,)]),
    "attn-D32-noqknorm": ("attn", 32, {"heads": 2, "head_dim": 8, "qk_norm": False},
                          [(16, 32), (16, 32), (16, 32), (32, 16)]),
    "attn-D32-qkv_bias": ("attn", 32, {"heads": 2, "kv_heads": 1, "head_dim": 8, "qkv_bias": True},
                          [(16, 32), (16,), (8, 32), (8,), (8, 32), (8,), (32, 16), (8,), (8,)]),
    "attn-D32-o_bias": ("attn", 32, {"heads": 2, "head_dim": 8, "qk_norm": False, "o_bias": True},
                        [(16, 32), (16, 32), (16, 32), (32, 16), (32,)]),
    "attn-D32-gate-bias": ("attn", 32, {"heads": 2, "kv_heads": 1, "head_dim": 8, "gate": True, "qkv_bias": True},
                           [(32, 32), (32,), (8, 32), (8,), (8, 32), (8,), (32, 16), (8,), (8,)]),
    "attn-D32-rope0.5-softcap": ("attn", 32, {"heads": 2, "head_dim": 8, "rope": True, "rope_fraction": 0.5,
                                              "softcap": 30.0},  # no parameters of their own
                                 [(16, 32), (16, 32), (16, 32), (32, 16), (8,), (8,)]),
    "mlp-D16-gelu": ("mlp", 16, {"mult": 2}, [(32, 16), (32,), (16, 32), (16,)]),
    "mlp-D16-swiglu": ("mlp", 16, {"mult": 2, "act": "swiglu"}, [(32, 16), (32, 16), (16, 32)]),
    "mlp-D16-swiglu-bias": ("mlp", 16, {"mult": 2, "act": "swiglu", "bias": True},
                            [(32, 16), (32,), (32, 16), (32,), (16, 32), (16,)]),
    "mlp-D16-gelu_tanh-gated": ("mlp", 16, {"act": "gelu_tanh", "gated": True}, [(64, 16), (64, 16), (16, 64)]),
    "mlp-D16-relu2-nobias-H40": ("mlp", 16, {"act": "relu2", "bias": False, "hidden": 40}, [(40, 16), (16, 40)]),
    "mlp-D16-silu-gated-H24-mult8": ("mlp", 16, {"act": "silu", "gated": True, "hidden": 24, "mult": 8},  # hidden wins
                                     [(24, 16), (24, 16), (16, 24)]),
    "delta_net-D32-H2-gate": ("delta_net", 32, {"heads": 2, "gate": True},  # head_dim auto 16
                              [(32, 32), (32, 32), (32, 32), (2, 32), (32, 4), (32, 4), (32, 4), (16,), (32, 32),
                               (32, 32)]),
    "gdn-D32-H2-K8": ("gated_delta_net", 32, {"heads": 2, "head_dim": 8},  # V = 16
                      [(16, 32), (16, 32), (32, 32), (2, 32), (2, 32), (2,), (2,), (16, 4), (16, 4), (32, 4), (16,),
                       (32, 32), (32, 32)]),
    "gdn-D32-H2-Hv4-K8-V12": ("gated_delta_net", 32, {"heads": 2, "v_heads": 4, "head_dim": 8, "v_head_dim": 12},
                              [(16, 32), (16, 32), (48, 32), (4, 32), (4, 32), (4,), (4,), (16, 4), (16, 4), (48, 4),
                               (12,), (32, 48), (48, 32)]),   # Qwen3-Next's GVA: a, b, A_log, dt_bias per value head
    "gdn-D32-H2-K8-negeig": ("gated_delta_net", 32, {"heads": 2, "head_dim": 8, "neg_eigval": True},  # no weights
                             [(16, 32), (16, 32), (32, 32), (2, 32), (2, 32), (2,), (2,), (16, 4), (16, 4), (32, 4),
                              (16,), (32, 32), (32, 32)]),
    "short_conv-D16-K3": ("short_conv", 16, {}, [(48, 16), (16, 1, 3), (16, 16)]),   # LFM2: in_proj, conv, out_proj
    "short_conv-D16-K4-bias": ("short_conv", 16, {"conv": 4, "bias": True},
                               [(48, 16), (48,), (16, 1, 4), (16,), (16, 16), (16,)]),
    "rwkv-D64-K16-ranks": ("rwkv", 64, {"head_dim": 16, "decay_rank": 8, "a_rank": 4, "v_rank": 2, "gate_rank": 6,
                                        "value_residual": True},
                           [(64,)] * 6 + [(64,), (64,), (4, 16)] + [(64, 64)] * 4 + [(64,), (64,)]
                           + [(64, 8), (8, 64), (64,), (64, 4), (4, 64), (64,), (64, 6), (6, 64), (64, 2), (2, 64),
                              (64,)]),
}


@pytest.mark.parametrize("case", list(SHAPES))
def test_params_equal_the_documented_shapes(case):
    kind, dim, options, shapes = SHAPES[case]
    assert _spec(kind, dim, **options).params(dim) == _numel(*shapes)


def test_ffn_closed_forms():
    assert FFNSpec(mult=2).params(16) == _numel((32, 16), (32,), (16, 32), (16,))
    assert FFNSpec(mult=3.5, token_shift=True).params(20) == _numel((20,), (96, 20), (20, 96))  # 70 -> 96
    assert FFNSpec(token_shift=True).state_numel(20) == 20 and FFNSpec().state_numel(20) == 0


@pytest.mark.parametrize("act", ["gelu", "gelu_tanh", "silu", "relu", "relu2", "swiglu"])
@pytest.mark.parametrize("gated", [False, True], ids=["plain", "gated"])
@pytest.mark.parametrize("bias", [None, False, True], ids=["bias-default", "nobias", "bias"])
@pytest.mark.parametrize("width", [None, 24], ids=["mult", "hidden"])
def test_ffn_closed_forms_every_form(act, gated, bias, width):
    """FFN sub-block and `mlp` kind: params = the docs/layers.md shapes, FLOPs = 2 per weight, for every form."""
    if act == "swiglu" and gated:
        with pytest.raises(ValueError, match="already gated"):
            FFNSpec(act=act, gated=gated)
        return
    opts = {"mult": 3, "act": act, "gated": gated, **({} if bias is None else {"bias": bias}),
            **({} if width is None else {"hidden": width})}
    d, f = 16, width or 48
    is_gated = gated or act == "swiglu"
    has_bias = (not is_gated) if bias is None else bias
    weights = [(f, d)] * (2 if is_gated else 1) + [(d, f)]
    biases = [(f,)] * (2 if is_gated else 1) + [(d,)] if has_bias else []
    for spec in (FFNSpec(**opts), _spec("mlp", d, **opts)):
        assert spec.bias == has_bias and spec.hidden == width
        assert spec.params(d) == _numel(*weights, *biases)
        assert spec.flops(d) == 2 * _numel(*weights)


def test_state_closed_forms():
    assert _spec("mamba", 24, state=4, conv=3).state_numel(24) == 48 * 2 + 48 * 4
    assert _spec("mamba2", 32, state=8, head_dim=16, groups=2).state_numel(32) == 96 * 3 + 4 * 16 * 8
    assert _spec("mamba2", 32, state=8, heads=3, head_dim=16).state_numel(32) == 64 * 3 + 3 * 16 * 8
    a = _spec("attn", 32, heads=4, kv_heads=2, head_dim=8, window=10)
    assert a.state_numel(32, context=100, meta=3) == 2 * 2 * 8 * (10 + 3)
    assert a.model_copy(update={"window": None}).state_numel(32, context=100) == 2 * 2 * 8 * 100
    assert _spec("gated_delta_net", 32, heads=2, head_dim=8).state_numel(32) == (16 + 16 + 32) * 3 + 2 * 8 * 16
    assert _spec("gated_delta_net", 32, heads=2, v_heads=4, head_dim=8, v_head_dim=12).state_numel(32) \
        == (16 + 16 + 48) * 3 + 4 * 8 * 12
    assert _spec("rwkv", 64, head_dim=16).state_numel(64) == 64 + 4 * 16 * 16
    assert _spec("mlp", 16).state_numel(16) == 0
    assert _spec("short_conv", 16, conv=4).state_numel(16) == 16 * 3   # the conv window of B * x


def test_attention_flops_grow_with_the_keys_seen():
    a = _spec("attn", 32, heads=4, head_dim=8, window=None)
    assert a.flops(32, context=200) - a.flops(32, context=100) == 4 * 32 * 100
    g = a.model_copy(update={"gate": True})   # the gate's half of q_proj: one more (H*E, D) matmul
    assert g.flops(32, context=100) - a.flops(32, context=100) == 2 * 32 * 32


@pytest.mark.parametrize("text,message", [
    ("layers attn(rope_fraction=0.5)", "needs rope=true"),
    ("layers attn(rope=true, head_dim=10, rope_fraction=0.3)", "must be an even count"),
    ("layers attn(rope=true, rope_fraction=0.01)", "must be an even count"),
    ("layers attn(softcap=0)", "softcap"),
], ids=["without-rope", "odd-width", "zero-width", "softcap-zero"])
def test_attention_option_errors_are_located(text, message):
    with pytest.raises(hybridc.HybridcError) as err:
        hybridc.load(text)
    assert message in str(err.value) and "^" in str(err.value)


def test_gated_delta_net_value_heads():
    """Qwen3-Next's linear attention (16 key heads, 32 value heads, 128 each): the recurrence runs per value head."""
    g = _spec("gated_delta_net", 2048, heads=16, v_heads=32, head_dim=128, v_head_dim=128)
    base = _spec("gated_delta_net", 2048, heads=16, head_dim=128, v_head_dim=128)
    assert g.flops(2048) - base.flops(2048) == 2 * 2048 * (3 * 16 * 128 + 2 * 16) + 2 * 16 * 128 * 4 \
        + 16 * (7 * 128 * 128 + 2 * 128)   # v, g, o, a, b projections, v conv, 16 more value-head recurrences
    with pytest.raises(hybridc.HybridcError) as err:
        hybridc.load("layers gated_delta_net(heads=2, v_heads=3)")
    assert "v_heads=3 is not a multiple of heads=2" in str(err.value) and "^" in str(err.value)
    for text in ("layers gated_delta_net(heads=2, v_heads=4) gated_delta_net(heads=4, v_heads=8) gated_delta_net",
                 "layers attn(heads=8, kv_heads=4) attn(heads=16)"):   # `auto` follows heads: written when it does not
        m = hybridc.load(text)
        assert hybridc.load(hybridc.dumps(m)) == m


def test_mamba_options_state_and_flops():
    """inner sets the state's width; biases add one add per bias, the inner norms 3 (plain) or 4 (weighted) per
    normed element of dt, B and C."""
    base = _spec("mamba", 24, state=4, conv=3)   # E 48, R 2
    assert _spec("mamba", 24, state=4, conv=3, inner=36).state_numel(24) == 36 * 2 + 36 * 4
    assert _spec("mamba", 24, state=4, conv=3, proj_bias=True).flops(24) - base.flops(24) == 2 * 48 + 24
    assert base.flops(24) - _spec("mamba", 24, state=4, conv=3, conv_bias=False).flops(24) == 48
    assert _spec("mamba", 24, state=4, conv=3, inner_norm="plain").flops(24) - base.flops(24) == 3 * (2 + 8)
    assert _spec("mamba", 24, state=4, conv=3, inner_norm="weighted").flops(24) - base.flops(24) == 4 * (2 + 8)
    # heads: the same projections split by head (same counts), the inner norms once per head
    heads = _spec("mamba", 24, state=4, conv=3, heads=4)
    assert heads.flops(24) == base.flops(24) and heads.state_numel(24) == base.state_numel(24)
    assert _spec("mamba", 24, state=4, conv=3, heads=4, inner_norm="plain").flops(24) - base.flops(24) == 4 * 3 * 10


@pytest.mark.parametrize("text,message", [
    ("layers mamba(inner=0)", "inner=N for N >= 1"),
    ("layers mamba(eps=1e-5)", "needs inner_norm=weighted or inner_norm=plain"),
    ("layers mamba(inner_norm=rms)", "expected one of none, weighted, plain"),
    ("dim 24\nlayers mamba(heads=5)", "heads=5 does not divide the inner width 48"),
    ("layers mamba(inner=30, heads=4)", "heads=4 does not divide the inner width 30"),
], ids=["inner-zero", "eps-without-norm", "unknown-norm", "heads-expand", "heads-inner"])
def test_mamba_option_errors_are_located(text, message):
    with pytest.raises(hybridc.HybridcError) as err:
        hybridc.load(text)
    assert message in str(err.value) and "^" in str(err.value)


def test_mamba2_option_flops_and_round_trip():
    """proj_bias: one add per bias (2E+2GN+H, D); conv_bias=false: X fewer adds; out_norm=false: no 4E norm. The
    widths survive the canonical text."""
    base = _spec("mamba2", 32, state=8, heads=3, head_dim=16)   # E 48, X 64, H 3
    opt = lambda **o: _spec("mamba2", 32, state=8, heads=3, head_dim=16, **o).flops(32)  # noqa: E731
    assert opt(proj_bias=True) - base.flops(32) == (48 + 64 + 3) + 32
    assert base.flops(32) - opt(conv_bias=False) == 64 and base.flops(32) - opt(out_norm=False) == 4 * 48
    assert opt(norm_before_gate=True) == base.flops(32)
    # the dt clamp (transformers' time_step_limit): one compare per head and bound, no parameters
    assert opt(dt_min=0.001) - base.flops(32) == 3 and opt(dt_min=0.001, dt_max=0.5) - base.flops(32) == 6
    assert _spec("mamba2", 32, state=8, heads=3, head_dim=16, dt_min=0.001).params(32) == base.params(32)
    m = hybridc.load("dim 32\nmamba2 head_dim=16\nlayers mamba2(heads=3, out_norm=false, proj_bias=true) "
                     "mamba2(inner=64, norm_before_gate=true, conv_bias=false) mamba2 attn\nat 3 mamba2 expand=1")
    assert [(l.mixers[0].heads, l.mixers[0].inner) for l in m.layers[:3]] == [(3, 48), (4, 64), (2, 32)]
    assert hybridc.load(hybridc.dumps(m)) == m


@pytest.mark.parametrize("text,message", [
    ("layers mamba2(heads=3, inner=40)", "inner=40 must equal heads*head_dim=3*64=192"),
    ("dim 32\nlayers mamba2(inner=40)", "inner=40 is not divisible by head_dim=64"),
    ("layers mamba2(heads=3, groups=2)", "not divisible by groups=2"),
    ("layers mamba2(out_norm=false, norm_before_gate=true)", "norm_before_gate=true needs out_norm=true"),
    ("layers mamba2(heads=0)", "heads must be an integer >= 1"),
    ("layers mamba2(dt_min=0.1, dt_max=0.05)", "dt_max=0.05 must exceed dt_min=0.1"),
], ids=["heads-inner", "inner-headdim", "heads-groups", "gate-order-without-norm", "heads-zero", "dt-bounds"])
def test_mamba2_option_errors_are_located(text, message):
    with pytest.raises(hybridc.HybridcError) as err:
        hybridc.load(text)
    assert message in str(err.value) and "^" in str(err.value)


def test_short_conv_flops_and_errors():
    """LFM2's gated short conv: in_proj (3D) and out_proj matmuls, B * x, K taps, C * y; bias: one add per bias."""
    assert _spec("short_conv", 16).flops(16) == 2 * 16 * 48 + 2 * 16 * 16 + 16 + 2 * 16 * 3 + 16
    assert _spec("short_conv", 16, bias=True).flops(16) - _spec("short_conv", 16).flops(16) == 48 + 16 + 16
    for text, message in (("layers short_conv(conv=0)", "option conv must be an integer >= 1"),
                          ("layers short_conv(state=3)", "valid options: conv: int (>=1, <=64); bias: true|false")):
        with pytest.raises(hybridc.HybridcError) as err:
            hybridc.load(text)
        assert message in str(err.value) and "^" in str(err.value)
    m = hybridc.load("dim 32\nshort_conv conv=4 bias=true\nlayers short_conv attn short_conv(conv=2)|attn")
    assert hybridc.load(hybridc.dumps(m)) == m


def test_mamba_130m_matches_the_published_count():
    """state-spaces/mamba-130m: 24 Mamba blocks, d_model 768, vocab 50280 (tied head): 129,135,360 parameters."""
    m = hybridc.load("24 layers every 100 backbone mamba\nat 24 mamba\ndim 768\nvocab 50280\noutput logits\n"
                     "norm rms\nffn after=none")
    d = hybridc.describe(m)
    assert m.schedule == ["mamba"] * 24
    assert d["params"] - d["params_io"]["head"] == 129_135_360   # hybridc's head is untied


def test_registry_is_the_one_list():
    specs = all_specs()
    assert tuple(specs) == NAMES and all(issubclass(c, KindSpec) for c in specs.values())
    for kind, cls in specs.items():
        assert cls.model_fields["kind"].default == kind
        assert cls.ROLE in ("backbone", "attention", "mlp")
        assert set(cls.SHOWN) <= set(cls.model_fields), kind
    assert set(pattern_symbols().values()) <= set(NAMES)
    assert pattern_symbols() == {"M": "mamba2", "G": "gated_delta_net", "*": "attn", "-": "mlp", "E": "moe"}
    assert "attn" in kinds_with_role("attention") and "mlp" not in kinds_with_role("backbone")
    with pytest.raises(KeyError):
        spec_class("mamab")


def test_defaults_are_written_once():
    """No kind's default is restated: cost code reads the spec; a bare kind resolves to the field defaults."""
    for kind, cls in all_specs().items():
        spec = _spec(kind, 64)
        for name, f in cls.model_fields.items():
            if not (f.json_schema_extra or {}).get("auto") and name != "kind":
                assert getattr(spec, name) == f.default, (kind, name)
    # hybridc/hf/families read transformers' config fields with transformers' defaults: not hybridc's
    text = "\n".join(p.read_text() for p in (ROOT / "hybridc").rglob("*.py")
                     if "kinds" not in p.parts and "families" not in p.parts)
    assert "DEFAULTS" not in text and not re.search(r"\.get\(\"(heads|head_dim|groups)\", \d", text)


@pytest.mark.parametrize("kind", NAMES)
def test_every_kind_has_both_backend_layers_and_a_docs_section(kind):
    """Adding a kind: hybridc/kinds/<kind>.py, a torch layer, a JAX layer, a section of docs/layers.md."""
    for backend in ("hybridc_torch", "hybridc_jax"):
        path = ROOT / "backends" / backend / "layers" / f"{kind}.py"
        assert path.is_file(), f"kind {kind!r} has no {backend} layer: write {path.relative_to(ROOT)}"
    docs = (ROOT / "docs" / "layers.md").read_text()
    assert re.search(rf"^#+ .*`{kind}`", docs, re.M), f"kind {kind!r} has no section in docs/layers.md"
