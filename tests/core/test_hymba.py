"""Hymba's structure in the core (no torch, no jax): the fused block's and kv_reuse's exact costs against the tensor
shapes docs/layers.md lists (written out here independently), Hymba-1.5B's published count, located errors, the
canonical text."""
from __future__ import annotations

import math
from pathlib import Path

import pytest

import hybridc
from hybridc.summary import describe

ROOT = Path(__file__).resolve().parents[2]
ZOO = ROOT / "examples" / "zoo" / "hymba_1.5b.hyb"


def _numel(*shapes) -> int:
    return sum(math.prod(s) for s in shapes)


def _fused_shapes(D, E, N, R, K, H, G, hd, reuse=False, qk_norm=False):
    """nvidia/Hymba-1.5B-Base modeling_hymba.py HymbaBlock's tensors (Mamba-1 SSM heads, inner layernorms on,
    no projection biases, conv bias on), as docs/layers.md names them."""
    ev = E // H
    proj = H * hd + (0 if reuse else G * hd + G * ev) + 2 * E
    shapes = [(proj, D), (D, E),                           # in_proj [q k v x z], out_proj
              (E, 1, K), (E,), (R + 2 * N, E), (E, R), (E,), (E, N), (E,),   # conv1d w b, x_proj, dt_proj w b, A_log, D
              (R,), (N,), (N,),                            # dt/B/C RMSNorm weights
              (E,), (E,)]                                  # norm_attn, norm_ssm (pre_avg_layernorm1/2), RMS
    if qk_norm:
        shapes += [(hd,)] + ([] if reuse else [(hd,)])
    return shapes


def _hymba_count(D=1600, E=3200, N=16, R=100, K=4, H=25, G=5, hd=64, F=5504, V=32001, L=32, M=128, consumers=15):
    """Hymba-1.5B's parameter count from modeling_hymba.py's shapes and its config.json (tied embeddings)."""
    def layer(reuse):
        return _numel(*_fused_shapes(D, E, N, R, K, H, G, hd, reuse), (D,), (D,), (F, D), (F, D), (D, F))
    return (L - consumers) * layer(False) + consumers * layer(True) + _numel((V, D), (M, D), (D,))


SMALL = "dim 24\nmamba state=4 conv=3 inner_norm=weighted\nattn heads=4 kv_heads=2 head_dim=6 qk_norm=false\nnorm rms\n"


@pytest.mark.parametrize("reuse", [False, True], ids=["own-kv", "kv_reuse"])
def test_fused_block_params_equal_the_documented_shapes(reuse):
    m = hybridc.load(SMALL + ("layers mamba|attn mamba|attn(kv_reuse=true)\nfusion hymba\n"))
    layer = m.layers[1 if reuse else 0]
    block = describe(m)["layers"][1 if reuse else 0]["params"]
    # E 48, R ceil(24/16) = 2, N 4, K 3; heads 4 of head_dim 6, 2 kv heads, values 48/4 = 12 wide
    assert block == _numel(*_fused_shapes(24, 48, 4, 2, 3, 4, 2, 6, reuse), (24,), (24,), (96, 24), (96,), (24, 96), (24,))
    # (+ the block norm and the default FFN: its norm, up (with bias), down (with bias))
    assert layer.parallel and m.fusion == "hymba"


def test_fused_block_state_and_flops():
    m = hybridc.load(SMALL + "layers mamba|attn(window=none) mamba|attn(window=none, kv_reuse=true)\nfusion hymba\n"
                     "meta_tokens 3\nffn after=none\n")
    rows = describe(m, context=10)["layers"]
    keys = 3 + 10
    assert rows[0]["state_bytes"] == 4 * (48 * 2 + 48 * 4 + 2 * (6 + 12) * keys)  # conv, ssm, K (hd) and V (Ev) cache
    assert rows[1]["state_bytes"] == 4 * (48 * 2 + 48 * 4)                        # the group's cache is layer 1's
    # the reusing layer's in_proj makes no k, v: 2*D*(G*hd + G*Ev) fewer FLOPs; scores and values the same
    assert rows[0]["flops_per_token"] - rows[1]["flops_per_token"] == 2 * 24 * (2 * 6 + 2 * 12)
    wider = describe(m, context=20)["layers"]
    assert wider[0]["flops_per_token"] - rows[0]["flops_per_token"] == 2 * 4 * (6 + 12) * 10


def test_kv_reuse_costs():
    """A kv_reuse attention has no k_proj, v_proj, k_norm and no cache: one cache per group."""
    m = hybridc.load("dim 32\nlayers attn attn(kv_reuse=true) attn(kv_reuse=true)\nattn heads=4 head_dim=8 "
                     "kv_heads=2 window=none\nffn after=none\nmeta_tokens 2")
    own, reuse = m.layers[0].mixers[0], m.layers[1].mixers[0]
    assert own.params(32) - reuse.params(32) == _numel((16, 32), (16, 32), (8,))
    assert reuse.state_numel(32, 100, 2) == 0 and own.state_numel(32, 100, 2) == 2 * 16 * 102
    assert own.flops(32, 100) - reuse.flops(32, 100) == 2 * 32 * 2 * 16
    d = describe(m, context=100)
    assert d["state_bytes"] == 4 * 2 * 16 * 102


def test_hymba_1_5b_matches_the_published_count():
    """nvidia/Hymba-1.5B-Base: 1.52B on the model card; modeling_hymba.py's shapes with its config give
    1,522,797,824, which describe reproduces exactly (0.18% above the card's rounded 1.52B)."""
    m = hybridc.load(ZOO.read_text(), str(ZOO))
    n = describe(m)["params"]
    assert n == _hymba_count() == 1_522_797_824
    assert abs(n - 1.52e9) / 1.52e9 < 0.005
    reuse = [i + 1 for i, l in enumerate(m.layers) if l.mixers[1].kv_reuse]
    assert reuse == [3, 5, 7, 9, 11, 13, 15, 18, 19, 21, 23, 25, 27, 29, 31]
    assert [i + 1 for i, l in enumerate(m.layers) if l.mixers[1].window is None] == [1, 16, 32]


@pytest.mark.parametrize("text,message,caret", [
    ("layers attn(kv_reuse=true) attn", "needs an earlier attention layer", "true"),
    ("layers attn attn(kv_heads=2, kv_reuse=true)", "kv_heads=2 vs 4", "true"),
    ("layers attn attn(head_dim=32, kv_reuse=true)", "head_dim=32 vs 64", "true"),
    ("layers attn attn(window=none, kv_reuse=true)", "window=None vs 60", "true"),
    ("layers attn attn(rope=true, kv_reuse=true)", "rope=True vs False", "true"),
    ("layers mamba|attn mamba|attn(kv_reuse=true) attn attn(kv_reuse=true) mamba|attn(kv_reuse=true)\n"
     "fusion hymba\nattn heads=4 head_dim=16", "value width 128 vs 16", "true"),
    ("layers mamba2|attn\nfusion hymba", "fusion hymba fuses mamba|attn blocks", "hymba"),
    ("layers mamba|attn(gate=true)\nfusion hymba", "attn gate=true cannot be used", "hymba"),
    ("layers mamba|attn(qkv_bias=true)\nfusion hymba", "qkv_bias=true cannot be used", "hymba"),
    ("layers mamba|attn(heads=5)\nfusion hymba", "not a multiple of heads=5", "hymba"),
    ("layers mamba|attn(qk_norm=proj)\nfusion hymba", "qk_norm=proj cannot be used", "hymba"),
], ids=["first", "kv-heads", "head-dim", "window", "rope", "value-width", "pair", "gate", "bias", "heads", "qk-proj"])
def test_hymba_errors_are_located(text, message, caret):
    with pytest.raises(hybridc.HybridcError) as err:
        hybridc.load(text)
    text = str(err.value)
    assert message in text and "valid:" in text and "^" in text
    line = text.splitlines()[[i for i, l in enumerate(text.splitlines()) if "^" in l][0] - 1]
    col = text.splitlines()[[i for i, l in enumerate(text.splitlines()) if "^" in l][0]].index("^")
    assert line[col:].startswith(caret)


@pytest.mark.parametrize("text", [
    "layers mamba|attn mamba|attn(kv_reuse=true)\nfusion hymba\nmeta_tokens 4",
    "layers attn attn(kv_reuse=true) mamba attn(kv_reuse=true)",
], ids=["fused", "plain"])
def test_canonical_round_trip(text):
    m = hybridc.load(text)
    assert hybridc.load(hybridc.dumps(m)) == m
    assert m.model_validate(m.model_dump()) == m
