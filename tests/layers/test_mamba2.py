"""`mamba2` (Mamba-2, SSD): the torch layer's contract, init (mamba_ssm's), cost formulas and option checks,
transformers' Mamba2Mixer as the outside oracle, and the JAX layer against the torch layer with shared weights."""
from types import SimpleNamespace as NS

import jax
import pytest
import torch
import torch.nn.functional as F

from _jax_parity import Pair, parity_tests
from _torch_contract import DIM, contract_tests
from _transformers_oracle import mixer_tests
from hybridc.kinds import spec_class
from hybridc_jax.layers import mamba2
from hybridc_torch.layers.mamba2 import Mamba2

SPECS = {
    "mamba2-N8-P8-G2-K4-C4": NS(kind="mamba2", state=8, expand=2, conv=4, head_dim=8, groups=2, chunk=4),
    "mamba2-N4-P4-G1-K3-C256": NS(kind="mamba2", state=4, expand=1, conv=3, head_dim=4, groups=1, chunk=256),
}
MAIN = "mamba2-N8-P8-G2-K4-C4"
COSTS = {"mamba2-N16-P16-G4-K2-D32": (NS(kind="mamba2", state=16, expand=2, conv=2, head_dim=16, groups=4, chunk=8),
                                      32)}

globals().update(contract_tests(Mamba2, SPECS, main=MAIN, costs=COSTS))
globals().update(parity_tests(Pair(Mamba2, mamba2, SPECS), main=MAIN))


def _hf_mamba2(layer, spec):
    pytest.importorskip("transformers")
    from transformers import Mamba2Config
    from transformers.models.mamba2.modeling_mamba2 import Mamba2Mixer

    cfg = Mamba2Config(hidden_size=DIM, state_size=spec.state, expand=spec.expand, conv_kernel=spec.conv,
                       head_dim=spec.head_dim, num_heads=spec.expand * DIM // spec.head_dim, n_groups=spec.groups,
                       chunk_size=spec.chunk, time_step_limit=(0.0, float("inf")), layer_norm_epsilon=1e-5,
                       use_bias=False, use_conv_bias=True, num_hidden_layers=1)
    hf = Mamba2Mixer(cfg, 0).eval()
    hf.load_state_dict(layer.state_dict())
    return cfg, hf


globals().update(mixer_tests(Mamba2, SPECS, _hf_mamba2))


def test_resolve_keeps_explicit_options():
    m2 = {"state": 16, "expand": 2, "conv": 4, "head_dim": 8, "groups": 2, "chunk": 64}
    assert spec_class("mamba2").resolve(m2, 16) == m2


@pytest.mark.parametrize("options, match", [
    ({"expand": 2, "head_dim": 12}, "head_dim"),
    ({"expand": 2, "head_dim": 8, "groups": 3}, "groups"),
    ({"expand": 1.3, "head_dim": 8}, "expand"),
], ids=["m2-headdim", "m2-groups", "m2-expand"])
def test_resolve_rejects_inconsistent_options(options, match):
    with pytest.raises(ValueError, match=match):
        spec_class("mamba2").resolve(options, 16)


def test_init_follows_mamba_ssm():
    torch.manual_seed(0)
    layer = Mamba2(DIM, SPECS["mamba2-N8-P8-G2-K4-C4"])
    A = torch.exp(layer.A_log)
    assert ((A >= 1) & (A <= 16)).all() and torch.equal(layer.D, torch.ones(4))
    dt = F.softplus(layer.dt_bias)
    assert torch.equal(layer.norm.weight, torch.ones(32)) and bool(((dt >= 1e-3 * 0.999) & (dt <= 0.1 * 1.001)).all())


def test_jax_rejects_a_head_dim_not_dividing_the_width():
    with pytest.raises(ValueError, match="head_dim"):
        mamba2.init(DIM, NS(state=4, expand=1, conv=4, head_dim=5, groups=1, chunk=4), key=jax.random.PRNGKey(0))
