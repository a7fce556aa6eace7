"""`gru`: the torch layer's contract, init and names (torch.nn.GRU's), cost formulas, torch.nn.GRU as the outside
oracle, and the JAX layer against the torch layer with shared weights."""
from types import SimpleNamespace as NS

import pytest
import torch

from _jax_parity import Pair, parity_tests
from _torch_contract import DIM, contract_tests, rand_x
from hybridc.kinds import spec_class
from hybridc_jax.layers import gru
from hybridc_torch.layers.gru import GRU

SPECS = {
    "gru-H16": NS(kind="gru", hidden=16),
    "gru-H12": NS(kind="gru", hidden=12),   # hidden != dim: an out_proj
}
MAIN = "gru-H12"
COSTS = {"gru-H40-D24": (NS(kind="gru", hidden=40), 24)}

globals().update(contract_tests(GRU, SPECS, main=MAIN, costs=COSTS))
globals().update(parity_tests(Pair(GRU, gru, SPECS), main=MAIN))


def test_resolve_auto_hidden():
    assert spec_class("gru").resolve({"hidden": "auto"}, 24) == {"hidden": 24}
    assert spec_class("gru").resolve({"kind": "gru", "hidden": "auto"}, 8) == {"kind": "gru", "hidden": 8}


def test_resolve_rejects_a_negative_hidden():
    with pytest.raises(ValueError, match="hidden"):
        spec_class("gru").resolve({"hidden": -3}, 16)


def test_init_and_names_equal_nn_gru():
    torch.manual_seed(5)
    layer = GRU(DIM, NS(hidden=DIM))
    torch.manual_seed(5)
    ref = torch.nn.GRU(DIM, DIM, batch_first=True)
    assert [n for n, _ in layer.named_parameters()] == [n for n, _ in ref.named_parameters()]
    for (name, p), q in zip(layer.named_parameters(), ref.parameters()):
        assert torch.equal(p, q), name


def test_matches_nn_gru():
    torch.manual_seed(0)
    layer = GRU(DIM, SPECS["gru-H12"])
    ref = torch.nn.GRU(DIM, 12, batch_first=True)
    ref.load_state_dict({k: v for k, v in layer.state_dict().items() if not k.startswith("out_proj")})
    x, h0 = rand_x(length=7), torch.randn(2, 12)
    with torch.no_grad():
        y, state = layer(x, {"h": h0})
        h_seq, h_n = ref(x, h0[None])
    torch.testing.assert_close(y, layer.out_proj(h_seq), rtol=0, atol=1e-6)
    torch.testing.assert_close(state["h"], h_n[0], rtol=0, atol=1e-6)
