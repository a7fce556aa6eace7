"""`delta_net` (DeltaNet, the delta rule): the torch layer's contract and cost formulas, fla's DeltaNet as the outside
oracle (state_dict and forward math), and the JAX layer against the torch layer with shared weights."""
from types import SimpleNamespace as NS

import pytest
import torch

import _fla_oracle as fo
from _fla_oracle import assert_same_names_shapes, delta_family_forward_tests, fla_module, needs_fla, state_dict_tests
from _jax_delta_parity import jax_layer, parity_tests
from _torch_delta_contract import D, contract_tests, resolved
from hybridc.kinds import spec_class
from hybridc_jax.layers import delta_net as jdelta
from hybridc_torch.layers.delta_net import DeltaNet

SPECS = {
    "delta_net-H4-K8-conv4": NS(kind="delta_net", heads=4, head_dim=8, conv=4, gate=False),
    "delta_net-H2-K8-conv0-gate": NS(kind="delta_net", heads=2, head_dim=8, conv=0, gate=True),
}
COSTS = {**{n: (D, s) for n, s in SPECS.items()},
         "delta_net-D48-H3-auto": (48, resolved("delta_net", {"kind": "delta_net", "heads": 3}, 48))}


def make(name):
    return DeltaNet(D, SPECS[name])


globals().update(contract_tests(make, list(SPECS), states=list(SPECS), costs=COSTS))
globals().update(parity_tests(make, lambda name: jax_layer(jdelta, SPECS[name]), list(SPECS),
                             vmap=["delta_net-H4-K8-conv4"]))
globals().update(state_dict_tests(make, {
    "delta_net-H4-K8-conv4": lambda: fla_module(fo.fla_layers.DeltaNet, hidden_size=D, num_heads=4)}))
globals().update(delta_family_forward_tests(make, list(SPECS), gated=False))


@needs_fla
def test_gated_output_state_dict_matches_fla_exactly():
    torch.manual_seed(0)
    ours = DeltaNet(D, NS(heads=4, head_dim=8, conv=3, gate=True))
    a, b = assert_same_names_shapes(ours, fla_module(fo.fla_layers.DeltaNet, hidden_size=D, num_heads=4, conv_size=3,
                                                     use_gate=True))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resolve_auto_head_dim_returns_a_new_dict():
    assert spec_class("delta_net").resolve({"heads": 4, "head_dim": "auto"}, 64)["head_dim"] == 16
    opts = {"heads": 4, "head_dim": "auto"}
    spec_class("delta_net").resolve(opts, 64)
    assert opts["head_dim"] == "auto"   # returns a new dict


@pytest.mark.parametrize("opts, match", [({"heads": 3}, "divisible"), ({"heads": 0}, "heads"),
                                         ({"conv": -1}, "conv")], ids=["heads3-of-64", "heads0", "conv-1"])
def test_resolve_rejects_inconsistent_options(opts, match):
    with pytest.raises(ValueError, match=match):
        spec_class("delta_net").resolve(opts, 64)


def test_jax_rejects_zero_heads():
    import jax

    with pytest.raises(ValueError, match="heads"):
        jdelta.init(D, NS(heads=0, head_dim=8, conv=4, gate=False), key=jax.random.PRNGKey(0))
