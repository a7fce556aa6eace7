"""FFN options (`gated`, `bias`, `hidden`, the activations) reach every place an FFN is set: `ffn ...`, `at N ffn ...`,
`mlp ...`, inline `mlp(...)`; bad combinations are located errors listing the valid forms; canonical text
round-trips."""
import pytest

import hybridc
from hybridc import HybridcError

BASE = "layers mamba attn mlp attn\n"


def _ffn(m, i):
    return m.layers[i].ffn


@pytest.mark.parametrize("text,where,want", [
    ("ffn act=silu gated=true hidden=40", 1, dict(act="silu", gated=True, bias=False, hidden=40)),
    ("ffn act=relu2 bias=false", 1, dict(act="relu2", gated=False, bias=False, hidden=None)),
    ("ffn act=swiglu", 1, dict(act="swiglu", gated=False, bias=False)),
    ("ffn act=gelu_tanh gated=true bias=true", 3, dict(act="gelu_tanh", gated=True, bias=True)),
    ("ffn act=swiglu\nat 4 ffn act=relu", 3, dict(act="relu", gated=False, bias=True)),  # bias follows the form
    ("ffn act=swiglu bias=true\nat 4 ffn act=relu", 3, dict(act="relu", bias=True)),   # written bias is kept
    ("ffn mult=2\nat 2 ffn hidden=100", 1, dict(mult=4.0, hidden=100)),                 # hidden wins over mult
    ("at 2 ffn gated=true act=gelu_tanh", 1, dict(act="gelu_tanh", gated=True, bias=False)),
], ids=["ffn-gated-hidden", "ffn-relu2-nobias", "ffn-swiglu", "ffn-gelu_tanh-gated-bias", "at-plain-after-swiglu",
        "at-keeps-written-bias", "at-hidden-over-mult", "at-gated"])
def test_ffn_statement_and_at_overrides(text, where, want):
    m = hybridc.load(BASE + text)
    got = _ffn(m, where)
    assert {k: getattr(got, k) for k in want} == want
    assert hybridc.load(hybridc.dumps(m)) == m


@pytest.mark.parametrize("text,want", [
    ("mlp act=relu2 bias=false hidden=40", dict(act="relu2", bias=False, hidden=40, mult=4.0)),
    ("mlp act=silu gated=true", dict(gated=True, bias=False)),
    ("mlp mult=2 hidden=30", dict(mult=4.0, hidden=30)),
], ids=["mlp-relu2", "mlp-gated", "mlp-hidden-over-mult"])
def test_mlp_statement(text, want):
    m = hybridc.load(BASE + text)
    spec = m.layers[2].mixers[0]
    assert {k: getattr(spec, k) for k in want} == want
    assert hybridc.load(hybridc.dumps(m)) == m


def test_inline_and_at_mlp_options():
    m = hybridc.load("layers mlp(act=gelu_tanh, gated=true, hidden=24) mlp attn\nat 2 mlp act=swiglu bias=true")
    a, b = m.layers[0].mixers[0], m.layers[1].mixers[0]
    assert (a.act, a.gated, a.bias, a.hidden) == ("gelu_tanh", True, False, 24)
    assert (b.act, b.gated, b.bias) == ("swiglu", False, True)
    assert hybridc.load(hybridc.dumps(m)) == m
    assert hybridc.describe(m)["layers"][0]["params"] == 3 * 256 * 24 + 2 * 256  # + the pre-norm


def test_defaults_are_unchanged():
    m = hybridc.load(BASE)
    f, p = _ffn(m, 1), m.layers[2].mixers[0]
    assert (f.act, f.gated, f.bias, f.hidden, f.mult) == ("gelu", False, True, None, 4.0)
    assert (p.act, p.gated, p.bias, p.hidden) == ("gelu", False, True, None)
    assert "bias" not in hybridc.dumps(hybridc.load(BASE + "ffn act=swiglu"))


@pytest.mark.parametrize("text,line,col,words", [
    ("ffn act=swiglu gated=true", 2, 5, "act=swiglu is already gated"),
    ("at 2 ffn act=swiglu gated=true", 2, 14, "act=swiglu is already gated"),
    ("mlp act=swiglu gated=true", 1, 19, "act=swiglu is already gated"),  # at the mlp layer it makes
    ("ffn hidden=0", 2, 12, "greater than or equal to 1"),
    ("ffn bias=maybe", 2, 10, "expected true or false"),
    ("ffn act=gelu_tan", 2, 9, "gelu_tanh"),
    ("at 3 ffn gated=true", 1, 19, "takes no FFN"),
], ids=["ffn", "at", "mlp", "hidden-zero", "bias-word", "act-typo", "mlp-has-no-ffn"])
def test_bad_combinations_are_located(text, line, col, words):
    with pytest.raises(HybridcError) as e:
        hybridc.load(BASE + text)
    assert words in str(e.value) and (e.value.line, e.value.column) == (line, col)
    if "already gated" in words:
        assert "valid forms" in str(e.value) and "gated=true" in str(e.value)
