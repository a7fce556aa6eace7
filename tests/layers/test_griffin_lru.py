"""`griffin_lru` (Griffin's recurrent block, RG-LRU): the torch layer's contract, init (recurrentgemma's), cost
formulas and option checks, positions (no reset after position 0), transformers' RecurrentGemmaRecurrentBlock as the
outside oracle, and the JAX layer against the torch layer with shared weights."""
import math
from types import SimpleNamespace as NS

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from _jax_parity import BATCH, LENGTH, Pair, close, close_states, parity_tests, rand
from _torch_contract import DIM, contract_tests, rand_x
from hybridc.kinds import spec_class
from hybridc_jax.layers import griffin_lru
from hybridc_torch.layers.griffin_lru import GriffinLRU, _SqrtBoundDerivative

SPECS = {
    "griffin-W24-M4-K4": NS(kind="griffin_lru", width=24, heads=4, conv=4),
    "griffin-W16-M2-K1": NS(kind="griffin_lru", width=16, heads=2, conv=1),
}
MAIN = "griffin-W24-M4-K4"
COSTS = {"griffin-W36-M3-K3-D24": (NS(kind="griffin_lru", width=36, heads=3, conv=3), 24)}
JAX = Pair(GriffinLRU, griffin_lru, SPECS)

globals().update(contract_tests(GriffinLRU, SPECS, main=MAIN, costs=COSTS))
globals().update(parity_tests(JAX, main=MAIN))


def make(spec_id):
    torch.manual_seed(0)
    return GriffinLRU(DIM, SPECS[spec_id])


def test_resolve_auto_width():
    assert spec_class("griffin_lru").resolve({"width": "auto", "heads": 4, "conv": 4}, 24)["width"] == 24


@pytest.mark.parametrize("options", [{"width": 30, "heads": 4}, {"width": "auto", "heads": 5}],
                         ids=["griffin-heads", "griffin-auto-heads"])
def test_resolve_rejects_heads_not_dividing_the_width(options):
    with pytest.raises(ValueError, match="heads"):
        spec_class("griffin_lru").resolve(options, 16)


def test_init_follows_recurrentgemma():
    torch.manual_seed(0)
    layer = GriffinLRU(DIM, NS(width=256, heads=4, conv=4))
    a2 = torch.exp(-2 * F.softplus(layer.rg_lru.a_param))  # a^2 at r_t = 1/8, i.e. the ring radius squared
    assert a2.min() >= 0.9 ** 2 - 1e-6 and a2.max() <= 0.999 ** 2 + 1e-6
    for name in ("linear_x.bias", "linear_y.bias", "linear_out.bias", "conv_1d.b", "rg_lru.input_gate.b"):
        assert not layer.get_parameter(name).any(), name
    assert abs(layer.linear_x.weight.std().item() - DIM ** -0.5) < 0.03
    assert abs(layer.rg_lru.a_gate.w.std().item() - 64 ** -0.5) < 0.02
    assert abs(layer.conv_1d.w.std().item() - math.sqrt(0.01 / 4)) < 0.01


def _hf_griffin(layer, spec):
    pytest.importorskip("transformers")
    from transformers import RecurrentGemmaConfig
    from transformers.models.recurrent_gemma.modeling_recurrent_gemma import RecurrentGemmaRecurrentBlock

    cfg = RecurrentGemmaConfig(hidden_size=DIM, lru_width=spec.width, num_attention_heads=spec.heads,
                               conv1d_width=spec.conv, num_hidden_layers=1, block_types=["recurrent"],
                               hidden_activation="gelu_pytorch_tanh")
    hf = RecurrentGemmaRecurrentBlock(cfg, 0).eval()
    sd = layer.state_dict()
    hf.load_state_dict({
        "linear_y.weight": sd["linear_y.weight"], "linear_y.bias": sd["linear_y.bias"],
        "linear_x.weight": sd["linear_x.weight"], "linear_x.bias": sd["linear_x.bias"],
        "linear_out.weight": sd["linear_out.weight"], "linear_out.bias": sd["linear_out.bias"],
        "conv_1d.weight": sd["conv_1d.w"].t()[:, None, :], "conv_1d.bias": sd["conv_1d.b"],
        "rg_lru.recurrent_param": sd["rg_lru.a_param"],
        "rg_lru.input_gate_weight": sd["rg_lru.input_gate.w"], "rg_lru.input_gate_bias": sd["rg_lru.input_gate.b"],
        "rg_lru.recurrent_gate_weight": sd["rg_lru.a_gate.w"], "rg_lru.recurrent_gate_bias": sd["rg_lru.a_gate.b"],
    })
    return hf


@pytest.mark.parametrize("offset", [0, 5], ids=lambda o: f"pos{o}")
@pytest.mark.parametrize("spec_id", list(SPECS))
def test_matches_transformers_recurrent_gemma(spec_id, offset):
    layer = make(spec_id)
    layer.rg_lru.a_gate.b.data.normal_()  # non-zero biases so the mapping of every tensor is exercised
    layer.rg_lru.input_gate.b.data.normal_()
    layer.conv_1d.b.data.normal_()
    hf = _hf_griffin(layer, SPECS[spec_id])
    x = rand_x(length=9)
    positions = (torch.arange(9) + offset)[None].expand(2, 9)
    with torch.no_grad():
        hf_y, _ = hf(x, positions, None, use_cache=False)
        state = None if offset == 0 else layer.init_state(2)
        y, _ = layer(x, state, {"pos_offset": offset})
    torch.testing.assert_close(y, hf_y, rtol=1e-5, atol=1e-5)


def test_positions_per_sequence_and_ctx_override():
    layer = make("griffin-W24-M4-K4")
    x = rand_x(length=4)
    state = layer.init_state(2)
    state["pos"] = torch.tensor([0, 5])
    with torch.no_grad():
        y, new_state = layer(x, state)
        y0, _ = layer(x)
        y5, _ = layer(x, layer.init_state(2), {"pos_offset": 5})
        y_ctx, ctx_state = layer(x, state, {"pos_offset": 0})
    torch.testing.assert_close(y[0], y0[0], rtol=0, atol=1e-7)
    torch.testing.assert_close(y[1], y5[1], rtol=0, atol=1e-7)
    assert new_state["pos"].tolist() == [4, 9] and ctx_state["pos"].tolist() == [4, 4]
    torch.testing.assert_close(y_ctx, y0, rtol=0, atol=1e-7)
    assert not torch.allclose(y5[:, 0], y0[:, 0])  # no reset at position 5: input scaled by sqrt(1 - a^2)


# ------------------------------------------------------------------------------------------------ JAX
@pytest.mark.parametrize("start", [5, "state-pos"])
def test_jax_positions_match_torch(start):
    """No reset when x starts at absolute position 5 (ctx) or at the state's token counter (no ctx)."""
    spec_id = "griffin-W24-M4-K4"
    layer, spec, params = JAX.make(spec_id)
    x, x2 = rand(BATCH, LENGTH, DIM), rand(BATCH, 3, DIM, seed=4)
    with torch.no_grad():
        if start == 5:
            t_y, t_state = layer(torch.from_numpy(x), layer.init_state(BATCH), {"pos_offset": 5})
        else:
            _, t_state0 = layer(torch.from_numpy(x2), layer.init_state(BATCH))
            t_y, t_state = layer(torch.from_numpy(x), t_state0)
    j_state0 = griffin_lru.init_state(DIM, spec, BATCH)
    if start == 5:
        j_y, j_state = JAX.jitted(spec_id).apply(params, jnp.asarray(x), j_state0, jnp.int32(5))
    else:
        run = jax.jit(lambda p, xx, s: griffin_lru.apply(p, xx, spec, s))
        _, j_state1 = run(params, jnp.asarray(x2), j_state0)
        j_y, j_state = run(params, jnp.asarray(x), j_state1)
    close(j_y, t_y)
    close_states(j_state, t_state)


def test_jax_rejects_heads_not_dividing_the_width():
    with pytest.raises(ValueError, match="divisible by heads"):
        griffin_lru.init_state(DIM, NS(width=10, heads=4, conv=4), 1)


def test_jax_sqrt_bound_derivative_matches_torch():
    """Clipped sqrt gradient (max 1000 at 0) equal to recurrentgemma's / torch's custom autograd."""
    v = np.array([0.0, 1e-9, 1e-4, 0.3, 2.0], np.float32)
    tv = torch.from_numpy(v).requires_grad_(True)
    _SqrtBoundDerivative.apply(tv).sum().backward()
    g = jax.grad(lambda a: jnp.sum(griffin_lru.sqrt_bound_derivative(a)))(jnp.asarray(v))
    close(g, tv.grad.numpy(), 1e-6)
    assert float(g[0]) == pytest.approx(1000.0)
