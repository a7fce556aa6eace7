"""`tie_embeddings true`: the IR setting, its located error, canonical text and describe's count (head 0)."""
import pytest

import hybridc
from hybridc import HybridcError

TIED = "layers mamba attn; dim 32; vocab 40; output logits; tie_embeddings true"


def test_tied_head_is_counted_once_and_round_trips():
    m = hybridc.load(TIED)
    untied = hybridc.load(TIED.replace("true", "false"))
    assert m.tie_embeddings and not untied.tie_embeddings and untied == hybridc.load(TIED.rsplit(";", 1)[0])
    d, du = hybridc.describe(m), hybridc.describe(untied)
    assert d["params_io"]["head"] == 0 and du["params_io"]["head"] == 40 * 32
    assert du["params"] - d["params"] == 40 * 32
    assert "tie_embeddings true" in hybridc.dumps(m) and "tie_embeddings" not in hybridc.dumps(untied)
    assert hybridc.load(hybridc.dumps(m)) == m


@pytest.mark.parametrize("text", ["layers mamba; tie_embeddings true",
                                  "layers mamba; vocab 40; tie_embeddings true",
                                  "layers mamba; vocab 40; output sequence; tie_embeddings true"],
                         ids=["input", "vocab-last", "vocab-sequence"])
def test_tie_without_vocab_logits_is_a_located_error_with_the_fix(text):
    with pytest.raises(HybridcError) as e:
        hybridc.load(text)
    col = text.index("tie_embeddings") + len("tie_embeddings ") + 1
    assert (e.value.line, e.value.column) == (1, col)
    assert "needs a vocab" in e.value.message and "set `vocab N` and `output logits`" in str(e.value)
