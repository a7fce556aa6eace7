"""Mixture of experts in the core (issue 13): options, exact total/active counts, FLOPs, the `moe every=K offset=O`
placement shortcut, the `moe` kind and pattern letter `E`, describe's JSON and table, canonical round trips, and
every located error."""
import json

import pytest

import hybridc
from hybridc import HybridcError
from hybridc.cli import main
from hybridc.ir import Model
from hybridc.kinds._ffn import FFNSpec

D = 32


def _norm(d=D):  # one LayerNorm (weight + bias): the pre-norm of a sub-block
    return 2 * d


# --- closed-form counts -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("act,per", [("swiglu", 3), ("gelu", 2)], ids=["gated", "plain"])
def test_expert_counts_closed_form(act, per):
    e, k, f = 6, 2, 24
    spec = FFNSpec(act=act, experts=e, top_k=k, hidden=f)
    assert spec.bias is False  # experts take no biases, whatever the form's dense default
    assert spec.params(D) == e * D + e * per * D * f         # router (E, D) + E experts
    assert spec.active_params(D) == e * D + k * per * D * f  # router + top_k experts
    assert spec.flops(D) == 2 * (e * D + k * per * D * f)


@pytest.mark.parametrize("gate", [False, True], ids=["nogate", "gate"])
@pytest.mark.parametrize("width", [None, 40], ids=["auto", "h40"])
def test_shared_expert_counts(gate, width):
    e, k, f, s = 4, 1, 16, 2
    spec = FFNSpec(act="swiglu", experts=e, top_k=k, hidden=f, shared_experts=s, shared_hidden=width, shared_gate=gate)
    fs = width if width is not None else s * f   # auto: S * the expert width, one shared MLP
    shared = 3 * D * fs + (D if gate else 0)      # gate/up/down (+ the shared gate's (1, D))
    assert spec.params(D) == e * D + e * 3 * D * f + shared
    assert spec.active_params(D) == e * D + k * 3 * D * f + shared
    assert spec.flops(D) == 2 * spec.active_params(D)


def test_dense_defaults_are_unchanged():
    spec = FFNSpec()
    assert (spec.experts, spec.top_k, spec.shared_experts, spec.router, spec.renorm) == (0, 2, 0, "softmax", True)
    assert spec.params(D) == 2 * D * 4 * D + 4 * D + D and spec.active_params(D) == spec.params(D)
    d = hybridc.describe(hybridc.load("dim 32\nlayers mamba attn mlp"))
    assert d["active_params"] == d["params"] and d["router_params"] == 0
    assert all(r["active_params"] == r["params"] and r["router_params"] == 0 for r in d["layers"])


def test_moe_kind_counts_and_defaults():
    m = hybridc.load("dim 32\nlayers moe moe(experts=4, top_k=1, act=swiglu, hidden=8)")
    a, b = m.layers[0].mixers[0], m.layers[1].mixers[0]
    assert (a.kind, a.experts, a.top_k, a.bias, a.mult) == ("moe", 8, 2, False, 4.0) and m.layers[0].ffn is None
    f = 4 * D
    d = hybridc.describe(m)
    assert d["layers"][0]["params"] == _norm() + 8 * D + 8 * 2 * D * f
    assert d["layers"][0]["active_params"] == _norm() + 8 * D + 2 * 2 * D * f
    assert d["layers"][1]["params"] == _norm() + 4 * D + 4 * 3 * D * 8
    assert d["layers"][1]["active_params"] == _norm() + 4 * D + 1 * 3 * D * 8
    assert d["params"] == sum(r["params"] for r in d["layers"]) + _norm()           # + the final norm
    assert d["active_params"] == sum(r["active_params"] for r in d["layers"]) + _norm()
    assert d["router_params"] == 12 * D
    assert d["flops_per_token"] == 2 * (8 * D + 2 * 2 * D * f) + 2 * (4 * D + 3 * D * 8)


def test_mlp_kind_takes_experts():
    m = hybridc.load("dim 32\nlayers mlp(experts=4, top_k=2, hidden=8, router=sigmoid, renorm=false) attn")
    mlp = m.layers[0].mixers[0]
    assert (mlp.kind, mlp.experts, mlp.router, mlp.renorm, mlp.bias) == ("mlp", 4, "sigmoid", False, False)
    assert mlp.params(D) == 4 * D + 4 * 2 * D * 8 and mlp.active_params(D) == 4 * D + 2 * 2 * D * 8


# --- the placement shortcut and the pattern letter ---------------------------------------------------------------

def _experts(m):
    return [l.ffn.experts if l.ffn is not None else None for l in m.layers]


@pytest.mark.parametrize("text,want", [
    ("layers mamba attn mamba attn; moe every=2 offset=1 experts=4; ffn after=all", [0, 4, 0, 4]),
    ("6 layers every 100; moe every=3 experts=4; ffn after=all", [4, 0, 0, 4, 0, 0]),
    ("layers mamba attn mamba attn mamba attn; moe every=2 offset=1 experts=4", [None, 4, None, 4, None, 4]),
    ("layers mamba attn mamba attn; moe every=2 offset=0 experts=4; ffn after=attn", None),
    ("rwkv head_dim=16; layers rwkv attn rwkv attn; moe every=1 experts=4", [0, 4, 0, 4]),  # RWKV-7's channel mix stays its own
    ("layers mamba attn mamba attn; moe every=2 offset=1 experts=4; ffn after=all; at 4 ffn experts=0", [0, 4, 0, 0]),
    ("layers mamba attn mamba attn; moe every=2 offset=1 experts=4; ffn after=all; at 1 ffn experts=2", [2, 4, 0, 4]),
    ("layers mamba mamba(ffn=true) attn; moe every=1 experts=2; ffn after=none", [None, 2, None]),
], ids=["jamba", "every3", "after-attn", "none-placed", "rwkv-own", "at-dense", "at-moe", "ffn-flag"])
def test_placement(text, want):
    if want is None:  # every=2 offset=0 hits only mamba layers, which have no FFN here
        with pytest.raises(HybridcError, match="no layer with an FFN"):
            hybridc.load("dim 32\n" + text)
        return
    m = hybridc.load("dim 32\n" + text)
    assert _experts(m) == want


def test_placed_ffn_takes_the_ffn_options_then_the_moe_statement():
    m = hybridc.load("dim 32\nlayers mamba attn; ffn act=swiglu hidden=64 after=all; "
                     "moe every=2 offset=1 experts=4 top_k=1 mult=2 shared_experts=1 shared_gate=true")
    dense, moe = m.layers[0].ffn, m.layers[1].ffn
    assert (dense.experts, dense.act, dense.hidden) == (0, "swiglu", 64)
    assert (moe.experts, moe.top_k, moe.act, moe.hidden, moe.mult) == (4, 1, "swiglu", None, 2.0)  # moe's width wins
    assert (moe.shared_experts, moe.shared_gate, moe.bias) == (1, True, False)
    m = hybridc.load("dim 32\nlayers mamba attn; ffn experts=4 after=all; moe every=2 offset=1 top_k=1")
    assert [(l.ffn.experts, l.ffn.top_k) for l in m.layers] == [(4, 2), (4, 1)]  # the ffn's experts, not 8


def test_pattern_letter_e():
    m = hybridc.load('dim 32\npattern "M*E-"\nmoe experts=4 hidden=16\nat 3 moe top_k=1')
    assert m.schedule == ["mamba2", "attn", "moe", "mlp"]
    moe = m.layers[2].mixers[0]
    assert (moe.experts, moe.top_k, moe.hidden) == (4, 1, 16)
    plain = hybridc.load('dim 32\npattern "ME"').layers[1].mixers[0]   # the kind's defaults serve
    assert (plain.experts, plain.top_k) == (8, 2)
    assert hybridc.describe(m)["num_mlp"] == 2


# --- describe ----------------------------------------------------------------------------------------------------

JAMBA_LIKE = "dim 32\nlayers mamba attn mamba attn\nmoe every=2 offset=1 experts=4 top_k=2 hidden=24\nffn act=swiglu after=all\n"


def test_describe_json_has_both_counts(capsys, tmp_path):
    path = tmp_path / "m.hyb"
    path.write_text(JAMBA_LIKE)
    assert main(["describe", str(path), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    moe = 4 * D + 4 * 3 * D * 24
    active = 4 * D + 2 * 3 * D * 24
    assert d["params"] - d["active_params"] == 2 * (moe - active)
    assert d["router_params"] == 2 * 4 * D
    rows = d["layers"]
    assert [r["params"] - r["active_params"] for r in rows] == [0, moe - active, 0, moe - active]
    assert rows[1]["flops_per_token"] - rows[0]["flops_per_token"] > 0
    assert "experts 4 top 2" in rows[1]["options"]


def test_describe_table_shows_active(capsys, tmp_path):
    path = tmp_path / "m.hyb"
    path.write_text(JAMBA_LIKE)
    assert main(["describe", str(path)]) == 0
    out = capsys.readouterr().out
    assert "active" in out and "active parameters per token" in out and "routers" in out
    assert main(["describe", "examples/headline.hyb"]) == 0
    assert "active" not in capsys.readouterr().out   # no MoE: the table is today's


# --- canonical text ----------------------------------------------------------------------------------------------

ROUND_TRIPS = [
    JAMBA_LIKE,
    "dim 32\n8 layers ratio 7:1\nmoe every=2 offset=1 experts=4 hidden=24 shared_experts=1 shared_gate=true\n"
    "ffn act=swiglu after=all\nat 4 ffn top_k=1",
    'dim 32\npattern "M*E-"\nmoe experts=4 router=sigmoid renorm=false act=gelu\nat 3 moe top_k=1',
    "dim 32\nlayers mamba attn x3\nffn experts=4 hidden=16 after=all mult=2\nat 2 ffn experts=0",
    "dim 32\nlayers moe attn mamba attn\nmoe every=2 offset=1 experts=4 top_k=3\nffn after=all",
    "dim 64\nlayers mlp(experts=3, top_k=3, shared_experts=2, shared_hidden=12) rwkv attn\n"
    "ffn experts=2 top_k=1",
    "dim 32\nlayers mamba2 attn mamba|attn attn\nffn act=gelu gated=true hidden=16 after=all experts=4 "
    "shared_experts=2 shared_gate=true\nat 2 ffn shared_hidden=20 shared_gate=false top_k=3\n"
    "at 4 ffn experts=0 shared_experts=0 shared_gate=false",
]


@pytest.mark.parametrize("text", ROUND_TRIPS, ids=range(len(ROUND_TRIPS)))
def test_canonical_round_trip(text):
    m = hybridc.load(text)
    assert hybridc.load(hybridc.dumps(m)) == m
    assert Model.model_validate_json(m.model_dump_json()) == m


def test_canonical_writes_the_placement_back():
    text = hybridc.dumps(hybridc.load(JAMBA_LIKE))
    assert "moe every=2 offset=1 experts=4 hidden=24" in text and "at " not in text


# --- located errors ----------------------------------------------------------------------------------------------

ERRORS = [  # text, line, column, words in the message, hint
    ("layers mamba attn; ffn experts=2 top_k=3 after=all", 1, 40, "top_k=3 is more than experts=2", None),
    ("layers moe attn\nmoe experts=2 top_k=4", 2, 21, "top_k=4 is more than experts=2", None),
    ('pattern "M*E"; moe top_k=9', 1, 26, "more than experts=8", None),
    ("layers moe attn; moe experts=0", 1, 30, "moe experts", None),
    ('pattern "M*E"\nmoe experts=0', 2, 13, "moe experts", None),
    ('pattern "M*E"; moe experts=4 gate_scale=2', 1, 12, "gate_scale does not apply to experts", None),
    ("layers attn attn; ffn experts=4 shared_gate=true", 1, 45, "shared_gate=true needs shared experts", None),
    ("layers attn attn; ffn experts=4 shared_hidden=8", 1, 47, "needs shared experts", None),
    ("layers attn attn; ffn shared_experts=1", 1, 38, "needs routed experts", None),
    ("layers attn attn; ffn experts=4 bias=true", 1, 38, "experts take no biases", None),
    ("layers attn attn; ffn bias=true after=all; moe every=2 offset=1", 1, 28, "experts take no biases", None),
    ("layers attn attn; at 2 ffn experts=2 top_k=3", 1, 44, "more than experts=2", None),
    ("layers mamba attn; moe every=2 offset=1 experts=2 top_k=3; ffn after=all", 1, 57, "ffn of layer 2", None),
    ("layers mamba attn\nmoe every=2 offset=1 shared_gate=true", 2, 34, "needs shared experts", None),
    ("layers mlp(experts=2, top_k=3) attn", 1, 29, "mlp top_k", None),
    ("layers mamba attn; moe every=2 offset=2", 1, 39, "offset=2 must be below every=2", "0 <= O < K"),
    ("layers mamba attn; moe every=0", 1, 30, "at least 1", None),
    ("layers mamba mamba attn; moe every=2 offset=1", 1, 36, "no layer with an FFN", None),
    ("layers mamba attn; moe every=2; moe every=3", 1, 37, "moe every is set twice", None),
    ("layers mamba attn; moe every=2 expert=4", 1, 32, "unknown option 'expert' for moe", "did you mean 'experts'?"),
    ("layers mamba attn; moe every=2 router=softplus", 1, 39, "softplus", "softmax"),
    ('pattern "M*E"; moe act=swiglu gated=true', 1, 12, "already gated", None),
    ("layers mamba attn mamba attn; ffn experts=4; share attn blocks=1 lora=2", 1, 66, "mixture of experts",
     "lora_on"),
]


@pytest.mark.parametrize("text,line,col,words,hint", ERRORS, ids=[e[0][:40] for e in ERRORS])
def test_located_errors(text, line, col, words, hint):
    with pytest.raises(HybridcError) as ei:
        hybridc.load(text, "model.hyb")
    e = ei.value
    assert words in e.message, e.message
    assert (e.line, e.column) == (line, col), str(e)
    rendered = str(e)
    assert rendered.startswith(f"model.hyb:{line}:{col}: error: ")
    src_line, caret = rendered.splitlines()[1:3]
    assert src_line.strip() == text.splitlines()[line - 1].strip()
    assert caret.index("^") - 2 == col - 1
    if hint:
        assert hint in rendered
    if "experts" in e.message and "valid" in e.message:   # the option errors list the valid forms
        assert "experts=E top_k=K" in e.message
