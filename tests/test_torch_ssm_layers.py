"""Tests for the SSM/RNN mixers: Mamba, Mamba2, GRU, GriffinLRU.

Layer contract (shapes, state, gradients, causality, decoding equality, no in-place state mutation), cost formulas
vs the modules, init, and numerical agreement with the published implementations: transformers' MambaMixer and
Mamba2Mixer (pure-torch paths), torch.nn.GRU, and transformers' RecurrentGemmaRecurrentBlock (Griffin).

Glossary of dimension letters:
    B: batch    L: sequence length    D: model dim
"""

import math
from types import SimpleNamespace as NS

import pytest
import torch
import torch.nn.functional as F

from hybridc.kinds import spec_class
from hybridc_torch.layers.griffin_lru import GriffinLRU
from hybridc_torch.layers.gru import GRU
from hybridc_torch.layers.mamba import Mamba
from hybridc_torch.layers.mamba2 import Mamba2

DIM = 16
CLASSES = {"mamba": Mamba, "mamba2": Mamba2, "gru": GRU, "griffin_lru": GriffinLRU}
SPECS = {
    "mamba-N4-E2-K4-R3": NS(kind="mamba", state=4, expand=2, conv=4, dt_rank=3),
    "mamba-N8-E1-K2-R1": NS(kind="mamba", state=8, expand=1, conv=2, dt_rank=1),
    "mamba2-N8-P8-G2-K4-C4": NS(kind="mamba2", state=8, expand=2, conv=4, head_dim=8, groups=2, chunk=4),
    "mamba2-N4-P4-G1-K3-C256": NS(kind="mamba2", state=4, expand=1, conv=3, head_dim=4, groups=1, chunk=256),
    "gru-H16": NS(kind="gru", hidden=16),
    "gru-H12": NS(kind="gru", hidden=12),
    "griffin-W24-M4-K4": NS(kind="griffin_lru", width=24, heads=4, conv=4),
    "griffin-W16-M2-K1": NS(kind="griffin_lru", width=16, heads=2, conv=1),
}
SPEC_IDS = list(SPECS)


def make(spec_id: str, seed: int = 0, dim: int = DIM):
    torch.manual_seed(seed)
    spec = SPECS[spec_id]
    return CLASSES[spec.kind](dim, spec)


def rand_x(batch=2, length=7, dim=DIM, seed=1, dtype=torch.float32):
    return torch.randn(batch, length, dim, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def decode(layer, x, L1, with_ctx=True):
    """Prefill x[:, :L1] from init_state, then step the rest. Returns (y (B, L, D), final state)."""
    batch, length, _ = x.shape
    state = layer.init_state(batch, dtype=x.dtype)
    ctx = {"pos_offset": 0} if with_ctx else None
    y0, state = layer(x[:, :L1], state, ctx)
    ys = [y0]
    for t in range(L1, length):
        y_t, state = layer.step(x[:, t], state, {"pos_offset": t} if with_ctx else None)
        ys.append(y_t[:, None])
    return torch.cat(ys, dim=1), state


# ------------------------------------------------------------------------------------------------ contract
@pytest.mark.parametrize("spec_id", SPEC_IDS)
def test_forward_shapes_and_state_layout(spec_id):
    layer = make(spec_id)
    x = rand_x(batch=3, length=5)
    y, none_state = layer(x)
    assert y.shape == (3, 5, DIM) and none_state is None
    init = layer.init_state(3)
    y2, state = layer(x, init)
    torch.testing.assert_close(y2, y, rtol=0, atol=1e-6)
    assert state.keys() == init.keys()
    for key, value in state.items():
        assert value.shape == init[key].shape and value.dtype == init[key].dtype, key
    for key, value in init.items():
        assert not value.any(), key
        assert value.dtype == {"conv": torch.float32, "pos": torch.int64}.get(key, torch.float32), key


@pytest.mark.parametrize("spec_id", SPEC_IDS)
def test_gradient_reaches_every_parameter(spec_id):
    layer = make(spec_id)
    y, state = layer(rand_x(), layer.init_state(2))
    (y.pow(2).sum() + sum(s.float().pow(2).sum() for s in state.values())).backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("spec_id", SPEC_IDS)
@pytest.mark.parametrize("t", [0, 3, 6], ids=lambda t: f"t{t}")
def test_causality(spec_id, t):
    layer = make(spec_id)
    x = rand_x()
    x2 = x.clone()
    x2[:, t] += 1.0
    with torch.no_grad():
        y, y2 = layer(x)[0], layer(x2)[0]
    assert torch.equal(y[:, :t], y2[:, :t])
    assert not torch.allclose(y[:, t], y2[:, t])


@pytest.mark.parametrize("spec_id", SPEC_IDS)
@pytest.mark.parametrize("L1", [0, 3, 7], ids=lambda n: f"L1-{n}")
def test_decoding_equality_fp32(spec_id, L1):
    layer = make(spec_id)
    x = rand_x(length=7)
    with torch.no_grad():
        y_full, _ = layer(x)
        y_dec, state = decode(layer, x, L1)
        _, state_full = layer(x, layer.init_state(2))
    torch.testing.assert_close(y_dec, y_full, rtol=0, atol=1e-5)
    for key in state:
        torch.testing.assert_close(state[key], state_full[key], rtol=0, atol=1e-5)


@pytest.mark.parametrize("spec_id", SPEC_IDS)
@pytest.mark.parametrize("L1", [0, 2], ids=lambda n: f"L1-{n}")
def test_decoding_equality_without_ctx(spec_id, L1):
    layer = make(spec_id)
    x = rand_x(length=4)
    with torch.no_grad():
        torch.testing.assert_close(decode(layer, x, L1, with_ctx=False)[0], layer(x)[0], rtol=0, atol=1e-5)


@pytest.mark.parametrize("spec_id", SPEC_IDS)
def test_chunked_prefill_equals_full_forward(spec_id):
    layer = make(spec_id)
    x = rand_x(length=8)
    with torch.no_grad():
        y1, state = layer(x[:, :3], layer.init_state(2))
        y2, state = layer(x[:, 3:], state)
        y_full, state_full = layer(x, layer.init_state(2))
    torch.testing.assert_close(torch.cat([y1, y2], dim=1), y_full, rtol=0, atol=1e-5)
    for key in state:
        torch.testing.assert_close(state[key], state_full[key], rtol=0, atol=1e-5)


@pytest.mark.parametrize("spec_id", ["mamba-N4-E2-K4-R3", "mamba2-N8-P8-G2-K4-C4", "gru-H12", "griffin-W24-M4-K4"])
def test_decoding_equality_fp64(spec_id):
    layer = make(spec_id).double()
    x = rand_x(length=6, dtype=torch.float64)
    with torch.no_grad():
        y_dec, state = decode(layer, x, 2)
        torch.testing.assert_close(y_dec, layer(x)[0], rtol=0, atol=1e-12)
    assert all(v.dtype == torch.float64 for k, v in state.items() if k != "pos")


@pytest.mark.parametrize("spec_id", SPEC_IDS)
def test_step_and_forward_do_not_mutate_state(spec_id):
    layer = make(spec_id)
    x = rand_x(length=3)
    with torch.no_grad():
        _, state = layer(x[:, :2], layer.init_state(2))
        before = {k: v.clone() for k, v in state.items()}
        layer.step(x[:, 2], state)
        layer(x[:, 2:], state)
    for key in state:
        assert torch.equal(state[key], before[key]), key


@pytest.mark.parametrize("spec_id", ["mamba-N4-E2-K4-R3", "mamba2-N8-P8-G2-K4-C4", "gru-H12", "griffin-W24-M4-K4"])
def test_bf16_runs_with_fp32_recurrent_state(spec_id):
    layer = make(spec_id).to(torch.bfloat16)
    x = rand_x(length=4, dtype=torch.bfloat16)
    with torch.no_grad():
        y, state = decode(layer, x, 2)
    assert y.dtype == torch.bfloat16 and torch.isfinite(y.float()).all()
    for key, value in state.items():
        assert value.dtype == {"conv": torch.bfloat16, "pos": torch.int64}.get(key, torch.float32), key


@pytest.mark.parametrize("spec_id", ["mamba-N4-E2-K4-R3", "mamba2-N8-P8-G2-K4-C4", "griffin-W24-M4-K4"])
def test_unknown_impl_raises(spec_id):
    spec = SPECS[spec_id]
    layer = CLASSES[spec.kind](DIM, spec, impl="reference")
    layer(rand_x(length=2))
    with pytest.raises(ValueError, match="reference"):
        CLASSES[spec.kind](DIM, spec, impl="nope")(rand_x(length=2))


def test_gru_unknown_impl_raises():
    with pytest.raises(ValueError, match="reference"):
        GRU(DIM, SPECS["gru-H12"], impl="nope")


# -------------------------------------------------------------------------------------------------- costs
COST_CASES = {
    **{k: (v, DIM) for k, v in SPECS.items()},
    "mamba-N16-E2-K4-R2-D24": (NS(kind="mamba", state=16, expand=2, conv=4, dt_rank=2), 24),
    "mamba2-N16-P16-G4-K2-D32": (NS(kind="mamba2", state=16, expand=2, conv=2, head_dim=16, groups=4, chunk=8), 32),
    "gru-H40-D24": (NS(kind="gru", hidden=40), 24),
    "griffin-W36-M3-K3-D24": (NS(kind="griffin_lru", width=36, heads=3, conv=3), 24),
}


@pytest.mark.parametrize("case", list(COST_CASES))
def test_costs_match_module(case):
    spec, dim = COST_CASES[case]
    torch.manual_seed(0)
    layer = CLASSES[spec.kind](dim, spec)
    ir_spec = spec_class(spec.kind)(**vars(spec))   # the core's spec: its formulas are methods
    assert ir_spec.params(dim) == sum(p.numel() for p in layer.parameters())
    assert ir_spec.state_numel(dim) == sum(t.numel() for t in layer.init_state(1).values() if t.is_floating_point())
    fl = ir_spec.flops(dim)
    # every weight takes part in >= 1 multiply-add per token (a bias in >= 1 add: the 2*dim slack covers out biases)
    assert isinstance(fl, int) and fl >= 2 * ir_spec.params(dim) - 2 * dim


def test_resolve_auto_values():
    assert spec_class("mamba").resolve({"state": 16, "expand": 2, "conv": 4, "dt_rank": "auto"}, 40)["dt_rank"] == 3
    assert spec_class("gru").resolve({"hidden": "auto"}, 24) == {"hidden": 24}
    assert spec_class("griffin_lru").resolve({"width": "auto", "heads": 4, "conv": 4}, 24)["width"] == 24
    m2 = {"state": 16, "expand": 2, "conv": 4, "head_dim": 8, "groups": 2, "chunk": 64}
    assert spec_class("mamba2").resolve(m2, 16) == m2
    assert spec_class("gru").resolve({"kind": "gru", "hidden": "auto"}, 8) == {"kind": "gru", "hidden": 8}


@pytest.mark.parametrize("kind, options, dim, match", [
    ("mamba2", {"expand": 2, "head_dim": 12}, 16, "head_dim"),
    ("mamba2", {"expand": 2, "head_dim": 8, "groups": 3}, 16, "groups"),
    ("mamba2", {"expand": 1.3, "head_dim": 8}, 16, "expand"),
    ("griffin_lru", {"width": 30, "heads": 4}, 16, "heads"),
    ("griffin_lru", {"width": "auto", "heads": 5}, 16, "heads"),
    ("mamba", {"state": 0, "expand": 2, "conv": 4, "dt_rank": 2}, 16, "state"),
    ("gru", {"hidden": -3}, 16, "hidden"),
], ids=["m2-headdim", "m2-groups", "m2-expand", "griffin-heads", "griffin-auto-heads", "mamba-state", "gru-hidden"])
def test_resolve_rejects_inconsistent_options(kind, options, dim, match):
    with pytest.raises(ValueError, match=match):
        spec_class(kind).resolve(options, dim)


# --------------------------------------------------------------------------------------------------- init
@pytest.mark.parametrize("spec_id", SPEC_IDS)
def test_init_is_deterministic_under_seed(spec_id):
    a, b, c = make(spec_id, seed=3), make(spec_id, seed=3), make(spec_id, seed=4)
    for (name, pa), pb, pc in zip(a.named_parameters(), b.parameters(), c.parameters()):
        assert torch.equal(pa, pb), name
    assert any(not torch.equal(pa, pc) for pa, pc in zip(a.parameters(), c.parameters()))


def _softplus_in(bias, lo, hi):
    dt = F.softplus(bias)
    return bool(((dt >= lo * 0.999) & (dt <= hi * 1.001)).all())


def test_mamba_init_follows_mamba_ssm():
    layer = make("mamba-N4-E2-K4-R3")
    E, N, R = 32, 4, 3
    assert torch.equal(layer.A_log, torch.log(torch.arange(1, N + 1, dtype=torch.float32)).repeat(E, 1))
    assert torch.equal(layer.D, torch.ones(E))
    assert layer.dt_proj.weight.abs().max() <= R ** -0.5
    assert _softplus_in(layer.dt_proj.bias, 1e-3, 0.1)
    shapes = {n: tuple(p.shape) for n, p in layer.named_parameters()}
    assert shapes == {"in_proj.weight": (2 * E, DIM), "conv1d.weight": (E, 1, 4), "conv1d.bias": (E,),
                      "x_proj.weight": (R + 2 * N, E), "dt_proj.weight": (E, R), "dt_proj.bias": (E,),
                      "A_log": (E, N), "D": (E,), "out_proj.weight": (DIM, E)}


def test_mamba2_init_follows_mamba_ssm():
    layer = make("mamba2-N8-P8-G2-K4-C4")
    A = torch.exp(layer.A_log)
    assert ((A >= 1) & (A <= 16)).all() and torch.equal(layer.D, torch.ones(4))
    assert torch.equal(layer.norm.weight, torch.ones(32)) and _softplus_in(layer.dt_bias, 1e-3, 0.1)


def test_griffin_init_follows_recurrentgemma():
    torch.manual_seed(0)
    layer = GriffinLRU(DIM, NS(width=256, heads=4, conv=4))
    a2 = torch.exp(-2 * F.softplus(layer.rg_lru.a_param))  # a^2 at r_t = 1/8, i.e. the ring radius squared
    assert a2.min() >= 0.9 ** 2 - 1e-6 and a2.max() <= 0.999 ** 2 + 1e-6
    for name in ("linear_x.bias", "linear_y.bias", "linear_out.bias", "conv_1d.b", "rg_lru.input_gate.b"):
        assert not layer.get_parameter(name).any(), name
    assert abs(layer.linear_x.weight.std().item() - DIM ** -0.5) < 0.03
    assert abs(layer.rg_lru.a_gate.w.std().item() - 64 ** -0.5) < 0.02
    assert abs(layer.conv_1d.w.std().item() - math.sqrt(0.01 / 4)) < 0.01


def test_gru_init_and_names_equal_nn_gru():
    torch.manual_seed(5)
    layer = GRU(DIM, NS(hidden=DIM))
    torch.manual_seed(5)
    ref = torch.nn.GRU(DIM, DIM, batch_first=True)
    assert [n for n, _ in layer.named_parameters()] == [n for n, _ in ref.named_parameters()]
    for (name, p), q in zip(layer.named_parameters(), ref.parameters()):
        assert torch.equal(p, q), name


# ---------------------------------------------------------------------------- published implementations
def test_gru_matches_nn_gru():
    layer = make("gru-H12")
    ref = torch.nn.GRU(DIM, 12, batch_first=True)
    ref.load_state_dict({k: v for k, v in layer.state_dict().items() if not k.startswith("out_proj")})
    x, h0 = rand_x(length=7), torch.randn(2, 12)
    with torch.no_grad():
        y, state = layer(x, {"h": h0})
        h_seq, h_n = ref(x, h0[None])
    torch.testing.assert_close(y, layer.out_proj(h_seq), rtol=0, atol=1e-6)
    torch.testing.assert_close(state["h"], h_n[0], rtol=0, atol=1e-6)


def _hf_mamba(layer, spec):
    from transformers import MambaConfig
    from transformers.models.mamba.modeling_mamba import MambaMixer

    cfg = MambaConfig(hidden_size=DIM, state_size=spec.state, expand=spec.expand, conv_kernel=spec.conv,
                      time_step_rank=spec.dt_rank, use_bias=False, use_conv_bias=True, num_hidden_layers=1)
    hf = MambaMixer(cfg, 0).eval()
    hf.load_state_dict(layer.state_dict())
    return cfg, hf


def _hf_mamba2(layer, spec):
    from transformers import Mamba2Config
    from transformers.models.mamba2.modeling_mamba2 import Mamba2Mixer

    cfg = Mamba2Config(hidden_size=DIM, state_size=spec.state, expand=spec.expand, conv_kernel=spec.conv,
                       head_dim=spec.head_dim, num_heads=spec.expand * DIM // spec.head_dim, n_groups=spec.groups,
                       chunk_size=spec.chunk, time_step_limit=(0.0, float("inf")), layer_norm_epsilon=1e-5,
                       use_bias=False, use_conv_bias=True, num_hidden_layers=1)
    hf = Mamba2Mixer(cfg, 0).eval()
    hf.load_state_dict(layer.state_dict())
    return cfg, hf


HF_CASES = [("mamba-N4-E2-K4-R3", _hf_mamba), ("mamba-N8-E1-K2-R1", _hf_mamba),
            ("mamba2-N8-P8-G2-K4-C4", _hf_mamba2), ("mamba2-N4-P4-G1-K3-C256", _hf_mamba2)]


@pytest.mark.parametrize("spec_id, build", HF_CASES, ids=[c[0] for c in HF_CASES])
@pytest.mark.parametrize("length", [1, 7, 33], ids=lambda n: f"L{n}")
def test_matches_transformers_forward(spec_id, build, length):
    layer = make(spec_id)
    _, hf = build(layer, SPECS[spec_id])
    x = rand_x(length=length)
    with torch.no_grad():
        torch.testing.assert_close(layer(x)[0], hf(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("spec_id, build", HF_CASES, ids=[c[0] for c in HF_CASES])
def test_matches_transformers_decoding(spec_id, build):
    from transformers import DynamicCache

    layer = make(spec_id)
    cfg, hf = build(layer, SPECS[spec_id])
    x, L1 = rand_x(length=8), 3
    cache = DynamicCache(config=cfg)
    with torch.no_grad():
        hf_y = torch.cat([hf(x[:, :L1], cache_params=cache)] +
                         [hf(x[:, t:t + 1], cache_params=cache) for t in range(L1, 8)], dim=1)
        y, state = decode(layer, x, L1)
    torch.testing.assert_close(y, hf_y, rtol=1e-5, atol=1e-5)
    hf_ssm, hf_conv = cache.layers[0].recurrent_states[0], cache.layers[0].conv_states[0]  # conv: (B, X, K)
    torch.testing.assert_close(state["ssm"], hf_ssm, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(state["conv"], hf_conv[..., 1:], rtol=0, atol=1e-6)


def _hf_griffin(layer, spec):
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


@pytest.mark.parametrize("spec_id", ["griffin-W24-M4-K4", "griffin-W16-M2-K1"])
@pytest.mark.parametrize("offset", [0, 5], ids=lambda o: f"pos{o}")
def test_griffin_matches_transformers_recurrent_gemma(spec_id, offset):
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


def test_griffin_positions_per_sequence_and_ctx_override():
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
