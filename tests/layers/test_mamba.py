"""`mamba` (Mamba-1, selective scan): the torch layer's contract, init (mamba_ssm's), cost formulas, transformers'
MambaMixer as the outside oracle, and the JAX layer against the torch layer with shared weights."""
from types import SimpleNamespace as NS

import pytest
import torch

from _jax_parity import Pair, parity_tests
from _torch_contract import DIM, contract_tests
from _transformers_oracle import mixer_tests
from hybridc.kinds import spec_class
from hybridc_jax.layers import mamba
from hybridc_torch.layers.mamba import Mamba

SPECS = {
    "mamba-N4-E2-K4-R3": NS(kind="mamba", state=4, expand=2, conv=4, dt_rank=3),
    "mamba-N8-E1-K2-R1": NS(kind="mamba", state=8, expand=1, conv=2, dt_rank=1),
}
MAIN = "mamba-N4-E2-K4-R3"
COSTS = {"mamba-N16-E2-K4-R2-D24": (NS(kind="mamba", state=16, expand=2, conv=4, dt_rank=2), 24)}

globals().update(contract_tests(Mamba, SPECS, main=MAIN, costs=COSTS))
globals().update(parity_tests(Pair(Mamba, mamba, SPECS), main=MAIN))


def _hf_mamba(layer, spec):
    pytest.importorskip("transformers")
    from transformers import MambaConfig
    from transformers.models.mamba.modeling_mamba import MambaMixer

    cfg = MambaConfig(hidden_size=DIM, state_size=spec.state, expand=spec.expand, conv_kernel=spec.conv,
                      time_step_rank=spec.dt_rank, use_bias=False, use_conv_bias=True, num_hidden_layers=1)
    hf = MambaMixer(cfg, 0).eval()
    hf.load_state_dict(layer.state_dict())
    return cfg, hf


globals().update(mixer_tests(Mamba, SPECS, _hf_mamba))


def test_resolve_auto_dt_rank():
    assert spec_class("mamba").resolve({"state": 16, "expand": 2, "conv": 4, "dt_rank": "auto"}, 40)["dt_rank"] == 3


def test_resolve_rejects_a_zero_state():
    with pytest.raises(ValueError, match="state"):
        spec_class("mamba").resolve({"state": 0, "expand": 2, "conv": 4, "dt_rank": 2}, 16)


def test_init_follows_mamba_ssm():
    torch.manual_seed(0)
    layer = Mamba(DIM, SPECS["mamba-N4-E2-K4-R3"])
    E, N, R = 32, 4, 3
    assert torch.equal(layer.A_log, torch.log(torch.arange(1, N + 1, dtype=torch.float32)).repeat(E, 1))
    assert torch.equal(layer.D, torch.ones(E))
    assert layer.dt_proj.weight.abs().max() <= R ** -0.5
    dt = torch.nn.functional.softplus(layer.dt_proj.bias)
    assert bool(((dt >= 1e-3 * 0.999) & (dt <= 0.1 * 1.001)).all())
    shapes = {n: tuple(p.shape) for n, p in layer.named_parameters()}
    assert shapes == {"in_proj.weight": (2 * E, DIM), "conv1d.weight": (E, 1, 4), "conv1d.bias": (E,),
                      "x_proj.weight": (R + 2 * N, E), "dt_proj.weight": (E, R), "dt_proj.bias": (E,),
                      "A_log": (E, N), "D": (E,), "out_proj.weight": (DIM, E)}
