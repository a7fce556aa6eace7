"""`gated_delta_net` (Gated DeltaNet, the gated delta rule): the torch layer's contract and cost formulas, fla's
GatedDeltaNet as the outside oracle (state_dict and forward math), and the JAX layer against the torch layer with
shared weights, its init distributions included."""
from types import SimpleNamespace as NS

import jax
import numpy as np
import pytest

import _fla_oracle as fo
from _fla_oracle import delta_family_forward_tests, fla_module, state_dict_tests
from _jax_delta_parity import FAST_KEY, close, jax_layer, parity_tests
from _torch_delta_contract import D, contract_tests, resolved
from hybridc.kinds import spec_class
from hybridc_jax.layers import gated_delta_net as jgdn
from hybridc_torch.layers.gated_delta_net import GatedDeltaNet

SPECS = {
    "gdn-H2-K8-ev2-conv4-gate": NS(kind="gated_delta_net", heads=2, head_dim=8, expand_v=2, conv=4, gate=True),
    "gdn-H4-K8-ev1.5-conv2": NS(kind="gated_delta_net", heads=4, head_dim=8, expand_v=1.5, conv=2, gate=False),
    "gdn-H2-K8-ev1.5-conv2-gate": NS(kind="gated_delta_net", heads=2, head_dim=8, expand_v=1.5, conv=2, gate=True),
}
JAX_LAYERS = ["gdn-H2-K8-ev1.5-conv2-gate"]
COSTS = {**{n: (D, s) for n, s in SPECS.items()},
         "gdn-D64-defaults-auto": (64, resolved("gated_delta_net", {"heads": 2, "head_dim": "auto"}, 64))}


def make(name):
    return GatedDeltaNet(D, SPECS[name])


globals().update(contract_tests(make, list(SPECS), states=list(SPECS), costs=COSTS))
globals().update(parity_tests(make, lambda name: jax_layer(jgdn, SPECS[name]), JAX_LAYERS, vmap=JAX_LAYERS))
globals().update(state_dict_tests(make, {
    "gdn-H2-K8-ev2-conv4-gate": lambda: fla_module(fo.fla_layers.GatedDeltaNet, hidden_size=D, num_heads=2,
                                                   head_dim=8, expand_v=2, use_gate=True),
    "gdn-H4-K8-ev1.5-conv2": lambda: fla_module(fo.fla_layers.GatedDeltaNet, hidden_size=D, num_heads=4, head_dim=8,
                                                expand_v=1.5, conv_size=2, use_gate=False),
}))
globals().update(delta_family_forward_tests(make, list(SPECS), gated=True))


def test_resolve_rejects_a_fractional_value_head_dim():
    with pytest.raises(ValueError, match="integer"):
        spec_class("gated_delta_net").resolve({"head_dim": 8, "expand_v": 1.3}, 64)


def test_layer_rejects_a_fractional_value_head_dim():
    with pytest.raises(ValueError, match="integer"):
        GatedDeltaNet(D, NS(heads=2, head_dim=8, expand_v=1.3, conv=4, gate=True))


def test_jax_init_distributions():
    """nn.Linear / nn.Conv1d uniform bounds, unit norms, A_log ~ log U(0, 16), dt = softplus(dt_bias) in [1e-3, 0.1]."""
    spec = SPECS["gdn-H2-K8-ev1.5-conv2-gate"]
    p = jax.jit(lambda key: jgdn.init(D, NS(**{**vars(spec), "heads": 64}), key=key))(FAST_KEY)
    assert 0.9 * D ** -0.5 < np.abs(p["q_proj.weight"]).max() <= D ** -0.5
    assert 0.9 * 2 ** -0.5 < np.abs(p["v_conv1d.weight"]).max() <= 2 ** -0.5
    assert (p["o_norm.weight"] == 1).all() and (p["A_log"] < np.log(16)).all() and p["A_log"].std() > 0.3
    dt = jax.nn.softplus(p["dt_bias"])
    close(jax.numpy.clip(dt, 1e-3, 0.1), dt, rtol=1e-5, atol=0)
    assert dt.min() < 3e-3 and dt.max() > 3e-2


def test_jax_rejects_a_fractional_value_head_dim():
    with pytest.raises(ValueError, match="expand_v"):
        jgdn.init(D, NS(heads=2, head_dim=8, expand_v=1.3, conv=4, gate=False), key=jax.random.PRNGKey(0))
