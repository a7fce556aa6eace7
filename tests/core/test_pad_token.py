"""`pad_token N`: the IR setting (the embedding's padding index), its located errors, canonical text, describe."""
import pytest

import hybridc
from hybridc import HybridcError

PAD = "layers mamba attn; dim 32; vocab 40; pad_token 3; output logits"


def test_pad_token_is_set_printed_after_vocab_and_round_trips():
    m, plain = hybridc.load(PAD), hybridc.load(PAD.replace("; pad_token 3", ""))
    assert (m.pad_token, plain.pad_token) == (3, None)
    assert hybridc.load(PAD.replace("pad_token 3", "pad_token none")) == plain
    lines = hybridc.dumps(m).splitlines()
    assert lines[lines.index("vocab 40") + 1] == "pad_token 3"
    assert "pad_token" not in hybridc.dumps(plain)
    assert hybridc.load(hybridc.dumps(m)) == m
    assert hybridc.describe(m)["params"] == hybridc.describe(plain)["params"]  # a row of embed.weight, no parameter


def test_pad_token_zero_and_the_last_token_id_are_valid():
    assert hybridc.load(PAD.replace("pad_token 3", "pad_token 0")).pad_token == 0
    assert hybridc.load(PAD.replace("pad_token 3", "pad_token 39")).pad_token == 39


@pytest.mark.parametrize("text, at, words, hint", [
    ("layers mamba attn; pad_token 3", "3", "pad_token 3 needs a vocab", "set `vocab N`, or remove pad_token"),
    ("layers mamba attn; input 5; output sequence; pad_token 0", "0", "needs a vocab", "set `vocab N`"),
    ("layers mamba attn; vocab 40; pad_token 40", "40", "must be below vocab 40", "valid: 0..39 or none"),
    ("layers mamba attn; pad_token 99; vocab 40", "99", "must be below vocab 40", "valid: 0..39 or none"),
    ("layers mamba attn; vocab 40; pad_token -1", "-1", "greater than or equal to 0", None),
    ("layers mamba attn; vocab 40; pad_token eos", "eos", "expected a number or none", None),
    ("layers mamba attn; vocab 40; pad_token 1.5", "1.5", "an integer", None),
], ids=["no-vocab", "input", "too-big", "before-vocab", "negative", "word", "float"])
def test_bad_pad_token_is_a_located_error(text, at, words, hint):
    with pytest.raises(HybridcError) as e:
        hybridc.load(text)
    assert (e.value.line, e.value.column) == (1, text.index(f"pad_token {at}") + len("pad_token ") + 1)
    assert words in e.value.message
    assert hint is None or hint in str(e.value)
    assert "^" in str(e.value)


def test_pad_token_error_on_a_later_line_points_there():
    text = "model m\nlayers mamba attn\nvocab 40\npad_token 41\n"
    with pytest.raises(HybridcError) as e:
        hybridc.load(text, "m.hyb")
    assert (e.value.line, e.value.column) == (4, 11) and str(e.value).startswith("m.hyb:4:11")


def test_pad_token_twice_is_an_error():
    with pytest.raises(HybridcError) as e:
        hybridc.load("layers mamba; vocab 40; pad_token 1; pad_token 2")
    assert "set twice" in e.value.message
