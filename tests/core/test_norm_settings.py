"""The `norm` statement's options (eps, zero_centered, place), attn `qk_norm=head|proj|none` and `fusion sum`:
defaults unchanged, exact parameter counts, describe, the canonical round trip, located errors."""
import pytest

import hybridc
from hybridc import HybridcError
from hybridc.summary import describe

BASE = "dim 32\ninput 8\nattn heads=2 head_dim=16\n"


def load(text):
    return hybridc.load(BASE + text)


def params(text):
    return describe(load(text))["params"]


def test_defaults_are_todays():
    m = load("layers mamba attn")
    assert (m.norm, m.norm_eps, m.norm_zero_centered, m.norm_place, m.fusion) == ("layer", None, False, "pre", "gate")
    assert m.layers[1].mixers[0].qk_norm == "head"
    assert m.norm_hints == {}
    assert "norm layer\n" in hybridc.dumps(m)
    assert describe(m)["norm"] == {"kind": "layer"}


@pytest.mark.parametrize("kind", ["layer", "rms"])
def test_place_counts_one_or_two_norms_per_sub_block(kind):
    """pre and post: one norm per sub-block (the mixer, the FFN); both: two. zero_centered and eps change no count."""
    per = 2 * 32 if kind == "layer" else 32
    pre = params(f"layers mamba attn; norm {kind}")
    assert params(f"layers mamba attn; norm {kind} place=post") == pre
    assert params(f"layers mamba attn; norm {kind} eps=1e-5 zero_centered=true") == pre
    # 2 layers, 1 FFN (after attn): 3 sub-blocks, each gains one norm
    assert params(f"layers mamba attn; norm {kind} place=both") == pre + 3 * per


def test_qk_norm_forms_count():
    """head: q_norm, k_norm (E,); proj: (H*E,) and (G*E,) (OLMo-2); none: nothing. true / false are head / none."""
    none = params("layers attn(qk_norm=none, kv_heads=1)")
    assert params("layers attn(qk_norm=head, kv_heads=1)") == none + 2 * 16
    assert params("layers attn(qk_norm=true, kv_heads=1)") == none + 2 * 16
    assert params("layers attn(qk_norm=proj, kv_heads=1)") == none + 2 * 16 + 1 * 16
    assert params("layers attn(qk_norm=false, kv_heads=1)") == none


def test_fusion_sum_has_no_parameters():
    gate = params("layers mamba|attn")
    assert params("layers mamba|attn; fusion sum") == gate - (32 * 32 + 32)
    assert params("layers mamba attn; parallel fusion=sum") == params("layers mamba attn; parallel") - (32 * 32 + 32)
    assert params("layers mamba|attn; fusion mean") == gate - (32 * 32 + 32) + 2 * 2 * 32


@pytest.mark.parametrize("text", [
    "norm rms eps=1e-5 zero_centered=true place=both",
    "norm layer zero_centered=true",
    "norm eps=1e-6",
    "norm place=post\nnorm rms",
    "norm rms place=pre eps=none",
    "attn qk_norm=proj",
    "attn qk_norm=true\nat 2 attn qk_norm=proj",
    "attn qk_norm=false",
    "fusion sum",
    "norm rms\nat 2 norm place=post",
    "norm place=both\nat 1,3 norm place=pre\nat 2 norm place=post",
    "at 2 norm place=pre",
])
def test_canonical_round_trip(text):
    m = load("layers mamba|attn attn mamba\n" + text)
    assert hybridc.load(hybridc.dumps(m)) == m
    assert hybridc.Model.model_validate_json(m.model_dump_json()) == m


def test_written_forms_and_describe():
    m = load("layers mamba attn\nnorm rms eps=1e-5 zero_centered=true place=both\nattn qk_norm=true")
    assert (m.norm, m.norm_eps, m.norm_zero_centered, m.norm_place) == ("rms", 1e-5, True, "both")
    assert m.norm_hints == {"norm_eps": 1e-5, "norm_zero_centered": True}
    assert "norm rms eps=1e-05 zero_centered=true place=both\n" in hybridc.dumps(m)
    assert describe(m)["norm"] == {"kind": "rms", "eps": 1e-5, "zero_centered": True, "place": "both"}
    assert m.layers[1].mixers[0].qk_norm == "head"
    assert "qk_norm=proj" in describe(load("layers attn(qk_norm=proj)"))["layers"][0]["options"]


def test_a_layer_sets_its_own_placement():
    """`at N norm place=` (OLMo-hybrid: post-norm attention among pre-norm deltanet layers); kept only where it
    differs from the model's; counts follow each layer's placement."""
    m = load("layers mamba attn mamba attn\nat 2 norm place=post\nat 3..4 norm place=both\nat 1 norm place=pre")
    assert [l.norm_place for l in m.layers] == [None, "post", "both", "both"]
    assert [m.layer_place(l) for l in m.layers] == ["pre", "post", "both", "both"]
    rows = [r["params"] for r in describe(m)["layers"]]
    plain = [r["params"] for r in describe(load("layers mamba attn mamba attn"))["layers"]]
    per = 2 * 32  # LayerNorm: weight and bias
    assert rows == [plain[0], plain[1], plain[2] + per, plain[3] + 2 * per]
    assert "at 3,4 norm place=both" in hybridc.dumps(m) and "at 2 norm place=post" in hybridc.dumps(m)
    assert describe(m)["layers"][1]["options"].endswith("norm post") and "norm" not in describe(m)["layers"][0]["options"]


def test_user_norm_replaces_the_presets():
    m = hybridc.load("preset hymba\nnorm place=both eps=1e-5")
    assert (m.norm_place, m.norm_eps) == ("both", 1e-5)


CASES = [  # text, line, column, words in the message, words in the hint
    ("norm rms eps=0", 1, 14, "norm eps", None),
    ("norm eps=2", 1, 10, "norm eps", None),
    ("norm place=middle", 1, 12, "expected one of pre, post, both", None),
    ("norm rms zero_centred=true", 1, 10, "unknown option 'zero_centred' for norm", "did you mean 'zero_centered'?"),
    ("norm rms zero_centered=maybe", 1, 24, "expected true or false", None),
    ("norm rms layer", 1, 10, "'norm' takes a kind and/or options", None),
    ("norm", 1, 1, "norm rms eps=1e-5 zero_centered=true place=both", None),
    ("norm batch eps=1e-5", 1, 6, "expected one of layer, rms", None),
    ("norm place=post\nnorm place=both", 2, 6, "set twice", None),
    ("attn qk_norm=heads", 1, 14, "expected one of head, proj, none, true, false", "did you mean 'head'?"),
    ("fusion add", 1, 8, "expected one of gate, mean, sum", None),
    ("parallel fusion=add", 1, 17, "expected one of gate, mean, sum", None),
    ("at 2 norm eps=1e-5", 1, 11, "'eps' is model-wide", "at N norm place=pre|post|both"),
    ("at 2 norm place=mid", 1, 17, "expected one of pre, post, both", None),
    ("at 2 norn place=post", 1, 6, "unknown layer kind 'norn'", "did you mean 'norm'?"),
]


@pytest.mark.parametrize("text,line,col,words,hint", CASES, ids=[c[0][:30] for c in CASES])
def test_located_errors(text, line, col, words, hint):
    with pytest.raises(HybridcError) as ei:
        hybridc.load(text + "\nlayers mamba attn", "model.hyb")
    e = ei.value
    assert words in e.message
    assert (e.line, e.column, e.source_name) == (line, col, "model.hyb")
    caret = str(e).splitlines()[2]
    assert caret.index("^") - 2 == col - 1
    if hint:
        assert hint in str(e)
