"""`short_conv` (LFM2's gated short convolution): the torch layer's contract, names and cost formulas, transformers'
Lfm2ShortConv as the outside oracle (forward at several lengths, cached decoding with its conv window), and the JAX
layer against the torch layer with shared weights."""
from types import SimpleNamespace as NS

import pytest
import torch

from _jax_parity import Pair, parity_tests
from _torch_contract import DIM, contract_tests, decode, rand_x
from hybridc.kinds import spec_class
from hybridc_jax.layers import short_conv
from hybridc_torch.layers.short_conv import ShortConv


def spec(**kw):
    return NS(kind="short_conv", **(dict(conv=3, bias=False) | kw))


SPECS = {
    "short_conv-K3": spec(),                       # LFM2's: conv_L_cache 3, conv_bias false
    "short_conv-K4-bias": spec(conv=4, bias=True),
    "short_conv-K1": spec(conv=1),                 # no history: an empty conv window
}
MAIN = "short_conv-K3"
COSTS = {"short_conv-K3-D24-bias": (spec(bias=True), 24)}
ORACLE = {k: SPECS[k] for k in ("short_conv-K3", "short_conv-K4-bias")}

globals().update(contract_tests(ShortConv, SPECS, main=MAIN, costs=COSTS))
globals().update(parity_tests(Pair(ShortConv, short_conv, SPECS), main=MAIN))


def _hf(spec_id):
    """(config, our layer, transformers' Lfm2ShortConv with our weights)."""
    lfm2 = pytest.importorskip("transformers.models.lfm2.modeling_lfm2",
                               reason="transformers' LFM2 (Lfm2ShortConv) is not installed")
    s = SPECS[spec_id]
    cfg = lfm2.Lfm2Config(hidden_size=DIM, num_hidden_layers=1, layer_types=["conv"], conv_L_cache=s.conv,
                          conv_bias=s.bias, vocab_size=8, intermediate_size=32, num_attention_heads=2,
                          num_key_value_heads=1)
    torch.manual_seed(0)
    layer = ShortConv(DIM, s)
    hf = lfm2.Lfm2ShortConv(cfg, 0).eval()
    hf.load_state_dict(layer.state_dict())   # the same names and shapes
    return cfg, layer, hf


@pytest.mark.parametrize("length", [1, 7, 33], ids=lambda n: f"L{n}")
@pytest.mark.parametrize("spec_id", list(ORACLE))
def test_matches_transformers_forward(spec_id, length):
    _, layer, hf = _hf(spec_id)
    x = rand_x(length=length)
    with torch.no_grad():
        torch.testing.assert_close(layer(x)[0], hf(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("spec_id", list(ORACLE))
def test_matches_transformers_decoding(spec_id):
    """Prefill 3 tokens, then one-token steps, through transformers' cache; the conv window equals ours."""
    from transformers import DynamicCache

    cfg, layer, hf = _hf(spec_id)
    x, L1 = rand_x(length=8), 3
    cache = DynamicCache(config=cfg)
    with torch.no_grad():
        hf_y = torch.cat([hf(x[:, :L1], cache=cache)] + [hf(x[:, t:t + 1], cache=cache) for t in range(L1, 8)],
                         dim=1)
        y, state = decode(layer, x, L1)
    torch.testing.assert_close(y, hf_y, rtol=1e-5, atol=1e-5)
    hf_conv = cache.layers[0].conv_states[0]   # (B, D, K): the last K inputs; ours keeps K-1
    torch.testing.assert_close(state["conv"], hf_conv[..., 1:], rtol=0, atol=1e-6)


def test_names_and_shapes_are_lfm2s():
    names = {n: tuple(p.shape) for n, p in ShortConv(DIM, SPECS["short_conv-K4-bias"]).named_parameters()}
    assert names == {"conv.weight": (DIM, 1, 4), "conv.bias": (DIM,), "in_proj.weight": (3 * DIM, DIM),
                     "in_proj.bias": (3 * DIM,), "out_proj.weight": (DIM, DIM), "out_proj.bias": (DIM,)}
    assert {n for n, _ in ShortConv(DIM, SPECS[MAIN]).named_parameters()} == {"conv.weight", "in_proj.weight",
                                                                            "out_proj.weight"}


def test_resolve_rejects_a_zero_width():
    with pytest.raises(ValueError, match="conv"):
        spec_class("short_conv").resolve({"conv": 0}, 16)
