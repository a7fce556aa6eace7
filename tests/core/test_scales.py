"""Scalar multipliers (Granite, Falcon-H1, Gemma): model settings `embed_scale residual_scale logit_scale
logit_softcap`, attn `scale in_scale key_scale out_scale`, mamba2 `in_scale out_scale z_scale x_scale b_scale c_scale
dt_scale`, FFN / mlp `gate_scale down_scale`. None has parameters; describe shows the ones that are set; the canonical
text round-trips; mistakes are located errors that list the valid forms."""
import pytest

import hybridc
from hybridc import HybridcError

BASE = "dim 32; vocab 40; output logits; ffn act=swiglu after=all; layers mamba2(head_dim=16)|attn mlp(gated=true)"
SCALED = (BASE.replace("mamba2(head_dim=16)", "mamba2(head_dim=16, in_scale=0.6, out_scale=1.4, z_scale=0.5, "
                       "x_scale=1.5, b_scale=0.7, c_scale=1.3, dt_scale=0.8)")
          .replace("|attn", "|attn(scale=0.05, in_scale=0.75, key_scale=1.6, out_scale=1.25)")
          .replace("mlp(gated=true)", "mlp(gated=true, gate_scale=0.5, down_scale=2)")
          .replace("after=all", "after=all gate_scale=0.4 down_scale=1.7")
          + "; embed_scale 12; residual_scale 0.22; logit_scale 0.125; logit_softcap 30")


def test_defaults_keep_todays_models():
    m = hybridc.load(BASE)
    assert (m.embed_scale, m.residual_scale, m.logit_scale, m.logit_softcap) == (1.0, 1.0, 1.0, None)
    attn, mamba2 = m.layers[0].mixers[1], m.layers[0].mixers[0]
    assert (attn.scale, attn.in_scale, attn.key_scale, attn.out_scale) == (None, 1.0, 1.0, 1.0)
    assert {getattr(mamba2, f"{n}_scale") for n in ("in", "out", "z", "x", "b", "c", "dt")} == {1.0}
    assert (m.layers[0].ffn.gate_scale, m.layers[0].ffn.down_scale) == (1.0, 1.0)
    d = hybridc.describe(m)
    assert d["scales"] == {} and "scale" not in hybridc.dumps(m) and "scale" not in str(d["layers"])


def test_scales_change_no_count_and_round_trip():
    m, base = hybridc.load(SCALED), hybridc.load(BASE)
    d, db = hybridc.describe(m), hybridc.describe(base)
    assert d["params"] == db["params"] and d["state_bytes"] == db["state_bytes"]
    # FLOPs: only mamba2 counts elementwise work (its muP multiplies: D + D + E + E + GN + GN + H); attention, the FFN
    # and the model-level scales count matmuls only
    mamba2 = m.layers[0].mixers[0]
    E, H, GN = mamba2.inner, mamba2.heads, mamba2.groups * mamba2.state
    assert d["flops_per_token"] - db["flops_per_token"] == 2 * 32 + 2 * E + 2 * GN + H == 2 * 32 + 128 + 256 + 4
    assert d["scales"] == {"embed_scale": 12.0, "residual_scale": 0.22, "logit_scale": 0.125, "logit_softcap": 30.0}
    text = hybridc.dumps(m)
    assert hybridc.load(text) == m
    for line in ("embed_scale 12", "residual_scale 0.22", "logit_scale 0.125", "logit_softcap 30"):
        assert line in text.splitlines()
    assert "gate_scale=0.4 down_scale=1.7" in text  # the ffn statement


def test_describe_shows_the_set_scales():
    rows = hybridc.describe(hybridc.load(SCALED))["layers"]
    assert "in_scale=0.6" in rows[0]["options"] and "dt_scale=0.8" in rows[0]["options"]
    assert "scale=0.05" in rows[0]["options"] and "key_scale=1.6" in rows[0]["options"]
    assert "gate_scale=0.4 down_scale=1.7" in rows[0]["options"]   # the FFN's short form
    assert "gate_scale=0.5 down_scale=2" in rows[1]["options"]     # the mlp layer


def test_describe_prints_the_scales(capsys):
    pytest.importorskip("rich")
    from hybridc.render import print_describe

    print_describe(hybridc.describe(hybridc.load(SCALED)))
    assert "scales: embed_scale 12, residual_scale 0.22, logit_scale 0.125, logit_softcap 30" in capsys.readouterr().out


def test_recurrentgemma_writes_the_bf16_normalizer():
    """sqrt(2560) = 50.596 is stored by transformers in bfloat16 as 50.5: that is the value to write."""
    m = hybridc.load("dim 2560; vocab 256; output logits; layers griffin_lru attn; embed_scale 50.5; logit_softcap 30")
    assert m.embed_scale == 50.5 and "embed_scale 50.5" in hybridc.dumps(m)


def _error(text: str) -> HybridcError:
    with pytest.raises(HybridcError) as e:
        hybridc.load(text)
    return e.value


@pytest.mark.parametrize("setting", ["logit_scale 0.125", "logit_softcap 30"], ids=["logit_scale", "logit_softcap"])
def test_logit_settings_need_logits(setting):
    text = f"layers mamba attn; dim 32; vocab 40; output sequence; {setting}"
    err = _error(text)
    assert (err.line, err.column) == (1, text.index(setting) + len(setting.split()[0]) + 2)
    assert "needs output logits" in err.message and "set `vocab N` and `output logits`" in str(err)


@pytest.mark.parametrize("text, at, words", [
    ("layers mamba attn; embed_scale 0", "0", "greater than 0"),
    ("layers mamba attn; residual_scale -2", "-2", "greater than 0"),
    ("layers mamba attn; embed_scale big", "big", "number"),
    ("layers mamba2 attn(scale=0)", "0", "greater than 0"),
    ("layers mamba2(dt_scale=-1) attn", "-1", "greater than 0"),
    ("layers mamba2(q_scale=2) attn", "q_scale", "valid options"),
    ("layers mamba attn(key_scales=2)", "key_scales", "key_scale"),
    ("layers mamba attn; ffn gate_scale=0.5", "gate_scale", "needs a gated FFN"),
    ("layers mamba mlp(gate_scale=0.5)", "mlp", "needs a gated FFN"),
    ("layers mamba attn; ffn act=swiglu down_scale=0", "0", "greater than 0"),
], ids=["embed-zero", "residual-negative", "embed-word", "attn-scale-zero", "dt-negative", "mamba2-unknown",
        "attn-typo", "ffn-gate-plain", "mlp-gate-plain", "ffn-down-zero"])
def test_bad_scales_are_located(text, at, words):
    err = _error(text)
    assert err.line == 1 and err.column == text.rindex(at) + 1, (err.column, str(err))
    assert words in str(err)
