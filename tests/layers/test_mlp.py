"""`mlp` and the FFN sub-block after a mixer (one torch module, `layers/ffn.py`): the torch layer's contract, the
core's cost formulas (the `mlp` kind's and the FFN sub-block's) against the module, the JAX layer against the
torch layer with shared weights, and the math against transformers' LlamaMLP (SwiGLU), GemmaMLP (gelu_tanh, gated)
and NemotronHMLP (relu2, no bias) with the same weights. (RWKV-7's channel mix, the FFN with token shift, is tested
with rwkv.)"""
from types import SimpleNamespace as NS

import pytest
import torch

from _jax_parity import Pair, parity_tests
from _torch_contract import DIM, contract_tests
from hybridc.kinds import spec_class
from hybridc.kinds._ffn import FFNSpec
from hybridc_jax.layers import mlp
from hybridc_torch.layers.mlp import LAYER as MLP


def mlp_spec(dim=DIM, **options) -> NS:
    """The resolved `mlp` spec (bias settled by the core, as the backends receive it)."""
    cls = spec_class("mlp")
    return NS(**cls(**cls.resolve({"bias": "auto", **options}, dim)).model_dump())


SPECS = {
    "mlp-M4-gelu": mlp_spec(mult=4, act="gelu"),
    "mlp-M2-swiglu": mlp_spec(mult=2, act="swiglu"),
    "mlp-M1.5-relu2": mlp_spec(mult=1.5, act="relu2"),
    "mlp-H24-gelu_tanh-gated-bias": mlp_spec(hidden=24, act="gelu_tanh", gated=True, bias=True),
    "mlp-H20-relu2-nobias": mlp_spec(hidden=20, act="relu2", bias=False),
    "mlp-M2-silu-gated": mlp_spec(mult=2, act="silu", gated=True),
}
MAIN = "mlp-M4-gelu"

# No `impl=` to check (no recurrence); the costs test is below (hidden biases add no multiply-adds).
globals().update(contract_tests(MLP, SPECS, main=MAIN, impl=False))
globals().update(parity_tests(Pair(MLP, mlp, SPECS), main=MAIN))

COSTS = {**{k: (v, DIM) for k, v in SPECS.items()}, "mlp-M3-silu-D24": (mlp_spec(24, mult=3, act="silu"), 24),
         "mlp-H7-relu-gated-bias-D24": (mlp_spec(24, hidden=7, act="relu", gated=True, bias=True), 24)}


@pytest.mark.parametrize("case", list(COSTS))
def test_costs_match_module(case):
    """The `mlp` kind's and the FFN sub-block's formulas against the module: parameters, no decode state, one
    multiply-add per weight and token."""
    spec, dim = COSTS[case]
    torch.manual_seed(0)
    layer = MLP(dim, spec)
    matmul_params = sum(p.numel() for p in layer.parameters() if p.dim() == 2)
    opts = {k: v for k, v in vars(spec).items() if k != "kind"}
    for core in (spec_class("mlp")(**vars(spec)), FFNSpec(**opts)):
        assert core.params(dim) == sum(p.numel() for p in layer.parameters())
        assert core.state_numel(dim) == 0 and layer.init_state(1) == {}
        assert core.flops(dim) == 2 * matmul_params


def test_ffn_spec_rejects_a_negative_mult():
    with pytest.raises(ValueError, match="mult"):
        FFNSpec(mult=-1, token_shift=True)


def _oracle(name):
    tf = pytest.importorskip("transformers")
    d, f = DIM, 24
    if name == "llama":
        from transformers.models.llama.modeling_llama import LlamaMLP
        cfg = tf.LlamaConfig(hidden_size=d, intermediate_size=f, hidden_act="silu", mlp_bias=False,
                             num_attention_heads=2, num_key_value_heads=2)
        return LlamaMLP(cfg), mlp_spec(hidden=f, act="swiglu")
    if name == "gemma":
        from transformers.models.gemma.modeling_gemma import GemmaMLP
        cfg = tf.GemmaConfig(hidden_size=d, intermediate_size=f, hidden_act="gelu_pytorch_tanh",
                             hidden_activation="gelu_pytorch_tanh", num_attention_heads=2, num_key_value_heads=2,
                             head_dim=8)
        return GemmaMLP(cfg), mlp_spec(hidden=f, act="gelu_tanh", gated=True)
    try:
        from transformers.models.nemotron_h.modeling_nemotron_h import NemotronHMLP
    except ImportError:
        pytest.skip("this transformers has no transformers.models.nemotron_h")
    cfg = tf.NemotronHConfig(hidden_size=d, intermediate_size=f, mlp_hidden_act="relu2", mlp_bias=False,
                                 num_attention_heads=2, num_key_value_heads=2, head_dim=8)
    return NemotronHMLP(cfg), mlp_spec(hidden=f, act="relu2", bias=False)


@pytest.mark.parametrize("name", ["llama", "gemma", "nemotron_h"])
def test_matches_transformers_mlp(name):
    """Same weights (gate_proj/up_proj/down_proj -> gate/up/down), same output to 1e-5 in fp32."""
    torch.manual_seed(0)
    ref, spec = _oracle(name)
    layer = MLP(DIM, spec)
    mine = {k: v for k, v in layer.state_dict().items()}
    theirs = {k.replace("_proj", ""): v for k, v in ref.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in mine.items()} == {k: tuple(v.shape) for k, v in theirs.items()}
    layer.load_state_dict(theirs)
    x = torch.randn(2, 7, DIM, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(layer(x)[0], ref(x), rtol=1e-5, atol=1e-5)
