"""`share KIND blocks= input= lora= lora_on= into=` (hybridc/sharing.py): sites, exact costs, canonical text, errors."""
import pytest

import hybridc
from hybridc import HybridcError
from hybridc.kinds._norm import norm_params

Z = ("dim 32\nattn heads=2 head_dim=32 window=none qk_norm=false\nffn act=gelu gated=true hidden=48\n"
     "layers mamba2 attn mamba2 mamba2 attn mamba2 attn mamba2\n")


def test_sites_blocks_in_turn():
    m = hybridc.load(Z + "share attn blocks=2 input=concat lora=4 into=next")
    sites = [l.site for l in m.layers if l.site is not None]
    assert [(s.index, s.block) for s in sites] == [(0, 0), (1, 1), (2, 0)]
    assert all(l.shared for l in m.layers if l.kind == "attn")


def test_defaults_keep_todays_sharing():
    m = hybridc.load(Z + "share attn")
    assert all(l.site is None for l in m.layers)
    assert hybridc.load(Z + "share attn blocks=1 input=hidden lora=0 into=residual") == m


@pytest.mark.parametrize("opts", ["blocks=2", "input=concat", "lora=4 lora_on=mlp", "lora=4 lora_on=attn", "into=next",
                                  "blocks=3 input=concat lora=8 lora_on=both into=next"])
def test_canonical_round_trip(opts):
    m = hybridc.load(Z + f"share attn {opts}")
    assert hybridc.load(hybridc.dumps(m)) == m


def test_describe_counts_shared_once_sites_each():
    """Closed form: 2 blocks (norm 2D, q/k/v (64, 64) + o (32, 64), ffn_norm, gated FFN 3*32*48) counted once each;
    per site: adapters (q/k/v: a (4, 64), b (64, 4); ffn: a (4, 32), b (96, 4)) and linear (32, 32)."""
    d, r, f, inner = 32, 4, 48, 64
    m = hybridc.load(Z + f"norm rms\nshare attn blocks=2 input=concat lora={r} into=next")
    block = norm_params("rms", 2 * d) + 3 * (2 * d) * inner + inner * d + norm_params("rms", d) + 3 * d * f
    site = 3 * (r * 2 * d + inner * r) + (r * d + 2 * f * r) + d * d
    rows = hybridc.describe(m)["layers"]
    attn = [r_["params"] for r_ in rows if r_["kind"] == "attn"]
    assert attn == [block + site, block + site, site]


ERRORS = [  # text after Z, line, column, words in the message, words in the hint
    ("share attn blocks=0", 5, 19, "share blocks must be at least 1", None),
    ("share attn blocks=4", 5, 12, "more shared blocks than the 3", "valid forms"),
    ("share attn lora=-1", 5, 17, "at least 0", None),
    ("share attn lora_on=mlp", 5, 12, "lora_on needs adapters", "valid forms"),
    ("share attn input=wide", 5, 18, "invalid value 'wide'", None),
    ("share attn into=nxt", 5, 17, "invalid value 'nxt'", "did you mean 'next'"),
    ("share attn lora_rank=4", 5, 12, "unknown option 'lora_rank'", "valid options"),
    ("share mamba2 input=concat", 5, 14, "share attn input=concat", "valid forms"),
    ("share mamba2 lora=4 lora_on=attn", 5, 21, "is not attention", "valid forms"),
    ("share mamba2 lora=4", 5, 14, "neither q/k/v projections nor an FFN", "valid forms"),
    ("share attn mamba2 blocks=2", 5, 19, "share options apply to one kind", "valid forms"),
    ("attn lora=4", 5, 6, "unknown option 'lora' for attn", "option of a shared block"),
    ("at 2 attn blocks=2", 5, 11, "unknown option 'blocks' for attn", "share attn blocks="),
]


@pytest.mark.parametrize("text,line,col,words,hint", ERRORS, ids=[e[0] for e in ERRORS])
def test_located_errors(text, line, col, words, hint):
    with pytest.raises(HybridcError) as ei:
        hybridc.load(Z + text, "model.hyb")
    e = ei.value
    assert words in e.message, e.message
    assert (e.line, e.column) == (line, col), str(e)
    if hint:
        assert hint in (e.hint or ""), e.hint


def test_concat_as_a_kind_option():
    """input=concat written on a kind (not on a share statement): the error says where it belongs."""
    with pytest.raises(HybridcError) as ei:
        hybridc.load("layers mamba2 attn(input=concat) mamba2", "m.hyb")
    assert "unknown option 'input' for attn" in ei.value.message and "share attn input=" in ei.value.hint
    assert ei.value.column == 20


def test_sites_need_pre_norms():
    with pytest.raises(HybridcError) as ei:
        hybridc.load(Z + "norm rms place=post\nshare attn blocks=2", "m.hyb")
    assert "place=pre" in ei.value.message and (ei.value.line, ei.value.column) == (6, 12)


def test_into_next_needs_a_next_layer():
    with pytest.raises(HybridcError) as ei:
        hybridc.load("layers mamba2 attn; share attn into=next", "m.hyb")
    assert "layer 2 is the last" in ei.value.message and ei.value.column == 32


def test_lora_mlp_needs_an_ffn():
    with pytest.raises(HybridcError) as ei:
        hybridc.load("layers mamba2 attn mamba2 attn; ffn after=none; share attn lora=2 lora_on=mlp", "m.hyb")
    assert "no FFN sub-block" in ei.value.message


def test_emit_refuses_sites():
    pytest.importorskip("torch")
    from hybridc.errors import BackendError
    from hybridc_torch.emit import emit

    with pytest.raises(BackendError):
        emit(hybridc.load(Z + "share attn blocks=2"))
