"""`mamba` (Mamba-1, selective scan): the torch layer's contract, init (mamba_ssm's), cost formulas, transformers'
MambaMixer (with and without biases, an explicit inner width), JambaMambaMixer (weighted dt/B/C norms) and
FalconMambaMixer (weightless ones), ZambaMambaMixer (several heads) as the outside oracles, and the JAX layer
against the torch layer with shared weights."""
import inspect
import math
from types import SimpleNamespace as NS

import pytest
import torch

from _jax_parity import Pair, parity_tests
from _torch_contract import DIM, contract_tests, decode, rand_x
from _transformers_oracle import mixer_tests
from hybridc.kinds import spec_class
from hybridc_jax.layers import mamba
from hybridc_torch.layers.mamba import Mamba


def spec(**kw):
    base = dict(state=4, expand=2, inner=None, conv=4, dt_rank=3, proj_bias=False, conv_bias=True, inner_norm="none",
                eps=1e-6, heads=1)
    return NS(kind="mamba", **(base | kw))


SPECS = {
    "mamba-N4-E2-K4-R3": spec(),
    "mamba-N8-E1-K2-R1": spec(state=8, expand=1, conv=2, dt_rank=1),
    "mamba-N4-I24-K4-R3-projbias-noconvbias": spec(inner=24, proj_bias=True, conv_bias=False),
    "mamba-N4-E2-K3-R2-weighted": spec(conv=3, dt_rank=2, inner_norm="weighted", eps=1e-5),
    "mamba-N8-E1-K2-R2-plain-projbias": spec(state=8, expand=1, conv=2, dt_rank=2, inner_norm="plain",
                                             proj_bias=True),
    "mamba-N4-E2-K4-R3-H2": spec(heads=2),   # Zamba-7B's two heads
    "mamba-N4-I24-K3-R2-H3-weighted-projbias": spec(inner=24, conv=3, dt_rank=2, heads=3, inner_norm="weighted",
                                                    eps=1e-5, proj_bias=True, conv_bias=False),
}
MAIN = "mamba-N4-E2-K4-R3"
COSTS = {"mamba-N16-E2-K4-R2-D24": (spec(state=16, dt_rank=2), 24),
         "mamba-N16-I36-K4-R2-D24-all": (spec(state=16, dt_rank=2, inner=36, proj_bias=True, conv_bias=False,
                                             inner_norm="weighted"), 24),
         "mamba-N16-I36-K4-R2-D24-H4-plain": (spec(state=16, dt_rank=2, inner=36, heads=4, inner_norm="plain"), 24)}
BIAS_SPECS = {k: SPECS[k] for k in ("mamba-N4-E2-K4-R3", "mamba-N8-E1-K2-R1",
                                    "mamba-N4-I24-K4-R3-projbias-noconvbias")}

globals().update(contract_tests(Mamba, SPECS, main=MAIN, costs=COSTS))
globals().update(parity_tests(Pair(Mamba, mamba, SPECS), main=MAIN))
_heads_parity = parity_tests(Pair(Mamba, mamba, SPECS), main="mamba-N4-I24-K3-R2-H3-weighted-projbias")


def test_jax_heads_forward_and_gradients_match_torch():
    """Several heads (per-head x_proj / dt_proj, B/C groups in the scan): values and gradients, as for MAIN."""
    _heads_parity["test_jax_forward_and_gradients_match_torch"]("mamba-N4-I24-K3-R2-H3-weighted-projbias")


def _hf_mamba(layer, spec):
    pytest.importorskip("transformers")
    from transformers import MambaConfig
    from transformers.models.mamba.modeling_mamba import MambaMixer

    cfg = MambaConfig(hidden_size=DIM, state_size=spec.state, expand=spec.expand, conv_kernel=spec.conv,
                      time_step_rank=spec.dt_rank, use_bias=spec.proj_bias, use_conv_bias=spec.conv_bias,
                      num_hidden_layers=1)
    if spec.inner is not None:
        cfg.intermediate_size = spec.inner   # its config takes an integer expand only (Falcon-H1's 1.5 needs this)
    hf = MambaMixer(cfg, 0).eval()
    hf.load_state_dict(layer.state_dict())
    return cfg, hf


def _random_norm_weights(layer):
    """The inner norms' weights start at ones; draw them so that the oracle sees them."""
    with torch.no_grad():
        for name in ("dt_layernorm", "b_layernorm", "c_layernorm"):
            getattr(layer, name).weight.uniform_(0.5, 1.5)


def _hf_jamba(layer, spec):
    jamba = pytest.importorskip("transformers.models.jamba.modeling_jamba",
                                reason="transformers' Jamba (JambaMambaMixer) is not installed")
    cfg = jamba.JambaConfig(hidden_size=DIM, mamba_d_state=spec.state, mamba_expand=spec.expand,
                            mamba_d_conv=spec.conv, mamba_dt_rank=spec.dt_rank, mamba_proj_bias=spec.proj_bias,
                            mamba_conv_bias=spec.conv_bias, rms_norm_eps=spec.eps, num_hidden_layers=1,
                            attn_layer_period=8, attn_layer_offset=4, expert_layer_period=8, expert_layer_offset=4)
    _random_norm_weights(layer)
    hf = jamba.JambaMambaMixer(cfg, 0).eval()
    hf.load_state_dict(layer.state_dict())
    return cfg, hf


def _hf_falcon_mamba(layer, spec):
    fm = pytest.importorskip("transformers.models.falcon_mamba.modeling_falcon_mamba",
                             reason="transformers' FalconMamba (FalconMambaMixer) is not installed")
    cfg = fm.FalconMambaConfig(hidden_size=DIM, state_size=spec.state, expand=spec.expand, conv_kernel=spec.conv,
                               time_step_rank=spec.dt_rank, use_bias=spec.proj_bias, use_conv_bias=spec.conv_bias,
                               mixer_rms_eps=spec.eps, num_hidden_layers=1)
    # transformers 5.x's own init reads the norms before making them: skip it (every weight is copied in below)
    skip_init = "initialize_mixer_weights" in inspect.signature(fm.FalconMambaMixer).parameters
    hf = fm.FalconMambaMixer(cfg, 0, **({"initialize_mixer_weights": False} if skip_init else {})).eval()
    hf.load_state_dict(layer.state_dict())   # its norm weights are non-persistent dummies
    return cfg, hf


def _named(tests: dict, suffix: str) -> dict:
    return {f"{name}_{suffix}": fn for name, fn in tests.items()}


globals().update(mixer_tests(Mamba, BIAS_SPECS, _hf_mamba))
globals().update(_named(mixer_tests(Mamba, {"weighted": SPECS["mamba-N4-E2-K3-R2-weighted"]}, _hf_jamba), "jamba"))
globals().update(_named(mixer_tests(Mamba, {"plain": SPECS["mamba-N8-E1-K2-R2-plain-projbias"]}, _hf_falcon_mamba),
                        "falcon_mamba"))


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


@pytest.mark.parametrize("spec_id,extra", [
    ("mamba-N4-I24-K4-R3-projbias-noconvbias", {"in_proj.bias": (48,), "out_proj.bias": (DIM,)}),
    ("mamba-N4-E2-K3-R2-weighted", {"dt_layernorm.weight": (2,), "b_layernorm.weight": (4,),
                                    "c_layernorm.weight": (4,)}),
    ("mamba-N8-E1-K2-R2-plain-projbias", {"in_proj.bias": (32,), "out_proj.bias": (DIM,)}),
], ids=["inner-bias", "weighted", "plain"])
def test_option_parameters_are_named_as_transformers(spec_id, extra):
    """The options add exactly these names (transformers' MambaMixer use_bias, Jamba's norms); no conv bias with
    conv_bias=false, no norm weights for plain norms."""
    s = SPECS[spec_id]
    names = {n: tuple(p.shape) for n, p in Mamba(DIM, s).named_parameters()}
    base = {"in_proj.weight", "conv1d.weight", "x_proj.weight", "dt_proj.weight", "dt_proj.bias", "A_log", "D",
            "out_proj.weight"} | ({"conv1d.bias"} if s.conv_bias else set())
    assert names.keys() == base | extra.keys()
    assert {k: names[k] for k in extra} == extra


ZAMBA = {k: SPECS[k] for k in ("mamba-N4-E2-K4-R3-H2",)}


def _hf_zamba(spec_id):
    """(config, our layer, transformers' ZambaMambaMixer with our weights: the same names and shapes)."""
    zamba = pytest.importorskip("transformers.models.zamba.modeling_zamba",
                                reason="transformers' Zamba (ZambaMambaMixer) is not installed")
    s = SPECS[spec_id]
    cfg = zamba.ZambaConfig(hidden_size=DIM, mamba_d_state=s.state, mamba_expand=s.expand, mamba_d_conv=s.conv,
                            mamba_dt_rank=s.dt_rank, n_mamba_heads=s.heads, mamba_conv_bias=s.conv_bias,
                            mamba_proj_bias=s.proj_bias, num_hidden_layers=1, layer_types=["linear_attention"],
                            vocab_size=8)
    torch.manual_seed(0)
    layer = Mamba(DIM, s)
    hf = zamba.ZambaMambaMixer(cfg, 0).eval()
    hf.load_state_dict(layer.state_dict())
    return cfg, layer, hf


@pytest.mark.parametrize("length", [1, 7, 33], ids=lambda n: f"L{n}")
@pytest.mark.parametrize("spec_id", list(ZAMBA))
def test_heads_match_zamba_forward(spec_id, length):
    _, layer, hf = _hf_zamba(spec_id)
    x = rand_x(length=length)
    with torch.no_grad():
        torch.testing.assert_close(layer(x)[0], hf(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("spec_id", list(ZAMBA))
def test_heads_match_zamba_decoding(spec_id):
    """Prefill 3 tokens, then one-token steps through transformers' cache; its (B, H, P, N) ssm state is ours
    (B, E, N) by head, its conv window (B, E, K) ours plus one."""
    from transformers import DynamicCache

    cfg, layer, hf = _hf_zamba(spec_id)
    x, L1 = rand_x(length=8), 3
    cache = DynamicCache(config=cfg)
    with torch.no_grad():
        hf_y = torch.cat([hf(x[:, :L1], cache=cache)] + [hf(x[:, t:t + 1], cache=cache) for t in range(L1, 8)],
                         dim=1)
        y, state = decode(layer, x, L1)
    torch.testing.assert_close(y, hf_y, rtol=1e-5, atol=1e-5)
    hf_ssm, hf_conv = cache.layers[0].recurrent_states[0], cache.layers[0].conv_states[0]
    torch.testing.assert_close(state["ssm"], hf_ssm.flatten(1, 2), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(state["conv"], hf_conv[..., 1:], rtol=0, atol=1e-6)


def test_heads_parameters_are_named_as_zamba():
    """heads > 1: ZambaMambaMixer's per-head tensors replace x_proj / dt_proj; A_log and D split by head; the
    count equals the single-head layer's."""
    layer = Mamba(DIM, SPECS["mamba-N4-I24-K3-R2-H3-weighted-projbias"])
    names = {n: tuple(p.shape) for n, p in layer.named_parameters()}
    assert names == {"x_proj_weight": (3, 2 + 8, 8), "dt_proj_weight": (3, 8, 2), "dt_proj_bias": (3, 8),
                     "A_log": (3, 8, 4), "D": (3, 8), "in_proj.weight": (48, DIM), "in_proj.bias": (48,),
                     "conv1d.weight": (24, 1, 3), "out_proj.weight": (DIM, 24), "out_proj.bias": (DIM,),
                     "dt_layernorm.weight": (2,), "b_layernorm.weight": (4,), "c_layernorm.weight": (4,)}
    one = Mamba(DIM, spec(inner=24, conv=3, dt_rank=2, inner_norm="weighted", eps=1e-5, proj_bias=True,
                          conv_bias=False))
    assert sum(p.numel() for p in one.parameters()) == sum(math.prod(s) for s in names.values())


def test_resolve_rejects_heads_that_do_not_divide_the_inner_width():
    with pytest.raises(ValueError, match="heads=3 does not divide the inner width 32"):
        spec_class("mamba").resolve({"expand": 2, "heads": 3, "dt_rank": 2}, 16)
