"""The .hyb language: every statement form, the issue's and the seeds' examples, placement tables."""
import pytest

import hybridc
from hybridc.schedule import megatron_positions, round_half_away, spread_positions

M, A = "mamba", "attn"


def sched(text):
    return hybridc.load(text).schedule


def test_headline_example():
    m = hybridc.load("10 layers ratio 9:1 backbone mamba; parallel meta_tokens=4")
    assert m.schedule == [M] * 9 + ["mamba|attn"]
    assert m.meta_tokens == 4 and m.mode == "parallel"


def test_seeds_resolve_schedule_examples():
    assert sched("layers mamba mamba attn") == [M, M, A]
    assert sched("10 layers ratio 9:1 backbone mamba") == [M] * 9 + [A]
    assert sched("6 layers every 3 backbone gru") == ["gru", "gru", A, "gru", "gru", A]


def test_seeds_describe_schedule_example():
    d = hybridc.describe(hybridc.load("10 layers ratio 9:1"))
    assert (d["schedule"], d["num_backbone"], d["num_attention"], d["backbone_pct"], d["mode"]) == (
        [M] * 9 + [A], 9, 1, 90.0, "interleaved")


@pytest.mark.parametrize("n,a,b,want", [
    (10, 9, 1, [9]), (12, 11, 1, [11]), (5, 3, 2, [2, 4]), (6, 3, 1, [2, 5]), (8, 1, 1, [1, 3, 5, 7]),
    (4, 1, 3, [0, 2, 3]), (3, 1, 0.0001, [2]), (7, 5, 2, [3, 6]), (1, 9, 1, [0]), (6, 2, 1, [2, 5]),
], ids=lambda v: str(v))
def test_spread_table(n, a, b, want):
    assert spread_positions(n, a, b) == want


def test_round_half_away_is_not_bankers():
    assert [round_half_away(x) for x in (0.5, 1.5, 2.5, -0.5, 2.4)] == [1, 2, 3, -1, 2]


@pytest.mark.parametrize("n,ratio,want", [(10, 0.1, [5]), (32, 0.1, [7, 16, 24]), (32, 0.125, [6, 12, 19, 25])])
def test_megatron_placement(n, ratio, want):
    b = 1
    a = round(1 / ratio) - 1
    assert megatron_positions(n, a, b) == want
    text = f"{n} layers ratio {a}:{b} placement megatron"
    assert [i for i, k in enumerate(sched(text)) if k == A] == want


@pytest.mark.parametrize("text,attn_at", [
    ("6 layers every 3", [2, 5]), ("8 layers every 8 offset 4", [4]), ("16 layers every 8 offset 4", [4, 12]),
    ("6 layers every 2 offset 0", [0, 2, 4]), ("6 layers", [3]), ("8 layers", [3, 7]), ("", [3]),
    ("7 layers every 1", list(range(7))),
], ids=lambda v: str(v))
def test_every_table(text, attn_at):
    assert [i for i, k in enumerate(sched(text)) if k == A] == attn_at


def test_explicit_items_and_repeats():
    assert sched("layers (mamba x3 attn) x4") == ([M] * 3 + [A]) * 4
    assert sched("layers mamba|attn attn(window=none) gru") == ["mamba|attn", A, "gru"]
    assert sched("12 layers ((mamba attn) x2 gru x2) x2") == [M, A, M, A, "gru", "gru"] * 2
    m = hybridc.load("layers attn(window=none) attn")
    assert m.layers[0].mixers[0].window is None and m.layers[1].mixers[0].window == 60


def test_pattern():
    assert sched('pattern "MM*-G"') == ["mamba2", "mamba2", A, "mlp", "gated_delta_net"]
    assert sched('5 layers; pattern "MM*-G"')[2] == A


def test_parallel_modes():
    assert sched("6 layers; parallel") == ["mamba|attn"] * 6
    assert sched("4 layers every 2 backbone gru; parallel") == ["gru", "gru|attn", "gru", "gru|attn"]
    assert hybridc.load("4 layers; parallel fusion=mean").fusion == "mean"
    assert hybridc.load("4 layers; parallel").fusion == "gate"


def test_model_settings():
    m = hybridc.load("model lm; dim 128; vocab 1000; output logits; norm rms; dropout 0; 4 layers")
    assert (m.name, m.dim, m.vocab, m.input, m.output, m.norm, m.dropout) == ("lm", 128, 1000, None, "logits", "rms", 0.0)
    d = hybridc.load("dim 64")
    assert (d.input, d.output, d.norm, d.dropout, len(d.layers)) == (64, "last", "layer", 0.1, 6)
    assert hybridc.load("input 7").input == 7


def test_kind_defaults_and_overrides():
    m = hybridc.load("layers mamba x4 attn; mamba state=32 expand=1; at 2..3 mamba state=8; at 5 attn window=none kv_heads=2")
    assert [l.mixers[0].state for l in m.layers[:4]] == [32, 8, 8, 32]
    assert all(l.mixers[0].expand == 1 for l in m.layers[:4])
    assert m.layers[4].mixers[0].window is None and m.layers[4].mixers[0].kv_heads == 2
    # inline item options beat kind statements; `at` beats both
    m = hybridc.load("layers mamba(state=4) mamba; mamba state=32; at 2 mamba conv=2")
    assert [(l.mixers[0].state, l.mixers[0].conv) for l in m.layers] == [(4, 4), (32, 2)]


def test_defaults_match_the_seeds():
    m = hybridc.load("layers mamba attn")
    mb, at = m.layers[0].mixers[0], m.layers[1].mixers[0]
    assert (mb.state, mb.expand, mb.conv, mb.dt_rank) == (16, 2, 4, 16)
    assert (at.heads, at.head_dim, at.kv_heads, at.window, at.qk_norm, at.rope) == (4, 64, 4, 60, "head", False)
    assert m.layers[0].ffn is None and (m.layers[1].ffn.mult, m.layers[1].ffn.act) == (4.0, "gelu")
    assert m.dropout == 0.1


def test_ffn_statement():
    m = hybridc.load("layers mamba attn mlp; ffn mult=2 act=silu after=all")
    assert [l.ffn is not None for l in m.layers] == [True, True, False]
    assert m.layers[0].ffn.act == "silu" and m.layers[0].ffn.mult == 2
    m = hybridc.load("layers mamba(ffn=true) attn(ffn=false); at 1 ffn mult=8")
    assert m.layers[0].ffn.mult == 8 and m.layers[1].ffn is None
    assert hybridc.load("layers rwkv attn").layers[0].ffn.token_shift


def test_share_and_meta_tokens():
    m = hybridc.load("12 layers every 4; share attn; meta_tokens 2")
    assert m.share == ("attn",) and [l.shared for l in m.layers].count(True) == 3 and m.meta_tokens == 2


def test_rwkv_value_residual_chain():
    m = hybridc.load("layers rwkv attn rwkv rwkv")
    assert [l.mixers[0].value_residual for l in m.layers if l.kind == "rwkv"] == [False, True, True]


PRESET_SCHEDULES = {
    "nemotron_h": [M] * 9 + [A], "jamba": [M, M, A, M, M, A], "parallel": ["mamba|attn"] * 6,
    "minimal_attn": [M] * 11 + [A], "hymba": ["mamba|attn"] * 4, "zamba": ([M] * 3 + [A]) * 3,
    "samba": [M, A, M, A], "griffin": ["griffin_lru", "griffin_lru", A] * 2,
}


@pytest.mark.parametrize("name", sorted(PRESET_SCHEDULES))
def test_presets(name):
    m = hybridc.load(f"preset {name}")
    assert m.schedule == PRESET_SCHEDULES[name]
    assert hybridc.load_file(f"examples/{name}.hyb") == m


def test_preset_details_and_override():
    h = hybridc.load("preset hymba")
    assert (h.meta_tokens, h.dropout, h.layers[0].mixers[0].state, h.layers[0].mixers[1].heads) == (4, 0.0, 16, 4)
    n = hybridc.load("preset nemotron_h")
    assert (n.dim, n.dropout, n.layers[-1].mixers[0].heads, n.layers[-1].mixers[0].head_dim) == (256, 0.1, 4, 64)
    o = hybridc.load("preset nemotron_h\ndim 128\n20 layers ratio 9:1")
    assert o.dim == 128 and len(o.layers) == 20
    assert hybridc.load("preset griffin").layers[2].mixers[0].window == 2048
    assert hybridc.load("preset zamba").share == ("attn",)


def test_comments_whitespace_and_separators():
    a = hybridc.load("# a model\n  10 layers   ratio 9 : 1  # trailing\n\n;;dim 64;\n")
    assert a == hybridc.load("10 layers ratio 9:1; dim 64")


def test_every_example_loads_and_round_trips():
    import pathlib

    files = sorted(pathlib.Path("examples").glob("*.hyb"))
    assert len(files) >= 14
    for f in files:
        m = hybridc.load_file(f)
        assert hybridc.load(hybridc.dumps(m)) == m, f


@pytest.mark.parametrize("text", ["dim 32\nrwkv head_dim=16\nlayers rwkv attn",
                                  "dim 48\nlayers rwkv(head_dim=16) attn rwkv(head_dim=24)",
                                  "dim 32\nlayers mamba2(head_dim=16) gated_delta_net(heads=2, head_dim=16)"])
def test_round_trip_where_a_kinds_defaults_do_not_fit_the_dim(text):
    """rwkv's default head_dim 64 does not divide dim 32: the canonical text compares with the class defaults."""
    m = hybridc.load(text)
    assert hybridc.load(hybridc.dumps(m)) == m


def test_example_details():
    m = hybridc.load_file("examples/ratio_megatron.hyb")
    assert [i for i, k in enumerate(m.schedule) if k == "attn"] == [7, 16, 24] and m.layers[0].kind == "mamba2"
    h = hybridc.load_file("examples/hymba_mean_fusion.hyb")
    assert [l.mixers[1].window for l in h.layers] == [None, 128, 128, None, 128, 128, 128, None]
    assert h.fusion == "mean" and h.meta_tokens == 8


# --- parallel blocks, groups after a kind, `N layers parallel` -------------------------------------------------------
def test_n_layers_parallel_is_the_seeds_parallel_mode():
    assert hybridc.load("6 layers parallel") == hybridc.load("6 layers; parallel")
    assert hybridc.load("6 layers parallel").schedule == ["mamba|attn"] * 6


def test_a_group_after_a_kind_is_a_group():
    assert hybridc.load("layers mlp (mamba2|attn)").schedule == ["mlp", "mamba2|attn"]
    assert hybridc.load("layers mlp (mamba2 attn) x2").schedule == ["mlp", "mamba2", "attn", "mamba2", "attn"]
    m = hybridc.load("layers attn(window=none) mamba")
    assert m.layers[0].mixers[0].window is None


def test_options_with_a_space_before_the_paren_say_so():
    with pytest.raises(hybridc.HybridcError) as e:
        hybridc.load("layers attn (window=none)")
    assert "no space" in e.value.hint


@pytest.mark.parametrize("text, words, hint", [
    ("layers mamba|gru", "not a parallel block", "BACKBONE|attn"),
    ("layers attn|mamba", "backbone first", "mamba|attn"),
    ("layers gru|rwkv attn", "not a parallel block", "gru, rwkv"),
], ids=["two-backbones", "attn-first", "rwkv-pair"])
def test_a_parallel_block_is_backbone_and_attention(text, words, hint):
    with pytest.raises(hybridc.HybridcError) as e:
        hybridc.load(text)
    assert words in e.value.message and hint in e.value.hint and e.value.line == 1


def test_parallel_pairs_in_the_ir_are_checked_too():
    from hybridc.ir import Layer

    m = hybridc.load("layers gru|attn")
    with pytest.raises(ValueError, match="parallel block"):
        Layer(mixers=(m.layers[0].mixers[0], m.layers[0].mixers[0]))


def test_schema_lists_every_kind_and_validates_models():
    jsonschema = pytest.importorskip("jsonschema")
    from hybridc.ir import Model, json_schema
    from hybridc.kinds import NAMES

    schema = json_schema()
    union = schema["$defs"]["Layer"]["properties"]["mixers"]["items"]
    assert list(union["discriminator"]["mapping"]) == list(NAMES)
    for text in ("preset hymba", "preset griffin", "layers rwkv attn delta_net mlp", "pattern \"MG*-\""):
        m = hybridc.load(text)
        jsonschema.validate(m.model_dump(mode="json"), schema)
        assert Model.model_validate(m.model_dump()) == m
