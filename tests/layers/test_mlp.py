"""`mlp` and the FFN sub-block after a mixer (one torch module, `layers/ffn.py`): the torch layer's contract, the
core's cost formulas (the `mlp` kind's and the FFN sub-block's) against the module, and the JAX layer against the
torch layer with shared weights. (RWKV-7's channel mix, the FFN with token shift, is tested with rwkv.)"""
from types import SimpleNamespace as NS

import pytest
import torch

from _jax_parity import Pair, parity_tests
from _torch_contract import DIM, contract_tests
from hybridc.kinds import spec_class
from hybridc.kinds._ffn import FFNSpec
from hybridc_jax.layers import mlp
from hybridc_torch.layers.mlp import LAYER as MLP

SPECS = {
    "mlp-M4-gelu": NS(kind="mlp", mult=4, act="gelu"),
    "mlp-M2-swiglu": NS(kind="mlp", mult=2, act="swiglu"),
    "mlp-M1.5-relu2": NS(kind="mlp", mult=1.5, act="relu2"),
}
MAIN = "mlp-M4-gelu"

# No `impl=` to check (no recurrence); the costs test is below (hidden biases add no multiply-adds).
globals().update(contract_tests(MLP, SPECS, main=MAIN, impl=False))
globals().update(parity_tests(Pair(MLP, mlp, SPECS), main=MAIN))

COSTS = {**{k: (v, DIM) for k, v in SPECS.items()}, "mlp-M3-silu-D24": (NS(kind="mlp", mult=3, act="silu"), 24)}


@pytest.mark.parametrize("case", list(COSTS))
def test_costs_match_module(case):
    """The `mlp` kind's and the FFN sub-block's formulas against the module: parameters, no decode state, >= one
    multiply-add per weight and token."""
    spec, dim = COSTS[case]
    torch.manual_seed(0)
    layer = MLP(dim, spec)
    matmul_params = sum(p.numel() for p in layer.parameters() if p.dim() == 2)
    for core in (spec_class("mlp")(**vars(spec)), FFNSpec(mult=spec.mult, act=spec.act)):
        assert core.params(dim) == sum(p.numel() for p in layer.parameters())
        assert core.state_numel(dim) == 0 and layer.init_state(1) == {}
        assert isinstance(core.flops(dim), int) and core.flops(dim) >= 2 * matmul_params


def test_ffn_spec_rejects_a_negative_mult():
    with pytest.raises(ValueError, match="mult"):
        FFNSpec(mult=-1, token_shift=True)
