"""Every user mistake is a HybridcError with line, column, a caret and (where one exists) a suggestion."""
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import hybridc
from hybridc import HybridcError

CASES = [  # text, line, column, words in the message, hint
    ("dim 64\nlayers mamab attn", 2, 8, "unknown layer kind 'mamab'", "did you mean 'mamba'?"),
    ("dim 256\ndim 3", 2, 1, "'dim' is set twice", None),
    ("10 layers ratio 9:1\n6 layers every 3", 2, 1, "second layout", None),
    ("10 layers ratio 0:0", 1, 17, "ratio 0:0", None),
    ("0 layers", 1, 1, "at least 1", None),
    ("attn heads=3 kv_heads=2", 1, 23, "not a multiple of kv_heads", None),
    ("attn window=0", 1, 13, "greater than or equal to 1", None),
    ("6 layers\nat 7 attn window=none", 2, 4, "out of range", None),
    ("at 1 attn window=none", 1, 6, "has no attn", None),
    ('5 layers; pattern "MM"', 1, 1, "pattern has 2", None),
    ('pattern "MMD*"', 1, 12, "'D'", None),
    ('pattern "MM+"', 1, 12, "'+'", None),
    ('pattern "M|M"', 1, 11, "'|'", None),
    ("layers mamba x20000", 1, 14, "10,000", None),
    ("20000 layers", 1, 1, "at most 10000", None),
    ("dim abc", 1, 5, "expected an integer", None),
    ("dropout high", 1, 9, "expected a number", None),
    ("mamba stat=3", 1, 7, "unknown option 'stat'", "did you mean 'state'?"),
    ("layers mamba; meta_tokens 4", 1, 27, "meta tokens need", None),
    ("output logits", 1, 8, "needs a vocab", None),
    ("preset nemotron", 1, 8, "unknown preset", "did you mean 'nemotron_h'?"),
    ("3 layers mamba mamba", 1, 1, "list has 2", None),
    ("10 layers ratio 9:1 placement even", 1, 31, "unknown placement", None),
    ("6 layers every 3 offset 3", 1, 25, "below every", None),
    ("norm batch", 1, 6, "expected one of layer, rms", None),
    ("paralel", 1, 1, "unknown statement 'paralel'", "did you mean 'parallel'?"),
    ("10 layers ratio 9:", 1, 19, "unexpected end of line", None),
    ("layers (mamba x3", 1, 17, "unexpected", None),
    ("dim 2.5", 1, 5, "integer", None),
    ("attn qk_norm=maybe", 1, 14, "head, proj, none, true, false", None),
    ("share gru", 1, 7, "no layer is a plain 'gru'", None),
    ("layers mamba|mamba", 1, 14, "two 'mamba'", None),
    ("at 3..2 attn window=none", 1, 4, "empty range", None),
    ("10 layers ratio 9:1 backbone mamab", 1, 30, "unknown layer kind", "did you mean 'mamba'?"),
    ("layers mamba(ffn=true) mlp(ffn=true)", 1, 24, "mlp layer takes no FFN", None),
    ("layers mamba2; mamba2 head_dim=48", 1, 8, "mamba2", None),
]


@pytest.mark.parametrize("text,line,col,words,hint", CASES, ids=[c[0][:30] for c in CASES])
def test_located_errors(text, line, col, words, hint):
    with pytest.raises(HybridcError) as ei:
        hybridc.load(text, "model.hyb")
    e = ei.value
    assert isinstance(e, ValueError)
    assert words in e.message
    assert (e.line, e.column, e.source_name) == (line, col, "model.hyb")
    rendered = str(e)
    assert rendered.startswith(f"model.hyb:{line}:{col}: error: ")
    src_line, caret = rendered.splitlines()[1:3]
    assert src_line.strip() == text.splitlines()[line - 1].strip()
    assert caret.index("^") - 2 == col - 1
    if hint:
        assert hint in rendered


def test_rendered_message_format():
    with pytest.raises(HybridcError) as ei:
        hybridc.load("dim 64\nlayers mamba attn\nlayers mamba mamab", "model.hyb")
    assert str(ei.value).splitlines()[0].startswith("model.hyb:3:1: error:")
    with pytest.raises(HybridcError) as ei:
        hybridc.load("model m\nlayers mamab attn", "model.hyb")
    assert str(ei.value) == ("model.hyb:2:8: error: unknown layer kind 'mamab'\n  layers mamab attn\n         ^^^^^\n"
                             "  did you mean 'mamba'?")


def test_errors_in_a_preset_point_into_the_preset():
    with pytest.raises(HybridcError) as ei:
        hybridc.load("preset zamba\nlayers mamba x4")
    assert "share attn" in ei.value.message and ei.value.source_name == "<preset zamba>"


WORDS = ["layers", "ratio", "every", "offset", "backbone", "placement", "pattern", "preset", "share", "at", "parallel",
         "meta_tokens", "mamba", "attn", "gru", "rwkv", "mlp", "ffn", "dim", "vocab", "input", "output", "x3", "9:1",
         "(", ")", "|", "=", ",", ";", "\n", "..", "10", "0", "-1", "1e9", "none", "true", '"M*"', "window=none",
         "heads=4", "state=", "nemotron_h", "mult=2", "after=all", "#c\n", "2.5", "fusion=mean", "logits"]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(WORDS), max_size=14), st.text(max_size=8))
def test_fuzz_only_hybridc_errors(words, noise):
    text = " ".join(words) + noise
    try:
        m = hybridc.load(text)
    except HybridcError as e:
        assert e.line is None or e.line >= 1
        str(e)
        return
    assert hybridc.load(hybridc.dumps(m)) == m


@settings(max_examples=200, deadline=None)
@given(st.sampled_from([open(f"examples/{n}").read() for n in ("every_feature.hyb", "headline.hyb", "megatron_pattern.hyb")]),
       st.integers(0, 400), st.text(max_size=5))
def test_fuzz_mutated_programs(base, where, insert):
    i = where % (len(base) + 1)
    text = base[:i] + insert + base[i + len(insert):]
    try:
        hybridc.load(text)
    except HybridcError:
        pass
