"""`mamba2` (Mamba-2, SSD): the torch layer's contract, init (mamba_ssm's), cost formulas and option checks (widths
`heads` / `inner`, `out_norm`, `norm_before_gate`, `proj_bias`, `conv_bias`), transformers' Mamba2Mixer,
NemotronHMamba2Mixer and FalconH1Mixer as the outside oracles, and the JAX layer against the torch layer with shared
weights."""
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


def m2(dim=DIM, **options):
    """The core's resolved spec (every option filled, `heads` / `inner` settled) as a plain namespace."""
    cls = spec_class("mamba2")
    return NS(**cls(**cls.resolve({"heads": "auto", "inner": "auto", **options}, dim)).model_dump())


SPECS = {
    "mamba2-N8-P8-G2-K4-C4": m2(state=8, expand=2, conv=4, head_dim=8, groups=2, chunk=4),
    "mamba2-N4-P4-G1-K3-C256": m2(state=4, expand=1, conv=3, head_dim=4, groups=1, chunk=256),
    # Falcon-H1's form: heads and head_dim explicit (inner 24 = 1.5 * dim), no output norm, projection biases
    "mamba2-H3-P8-nonorm-projbias": m2(state=8, heads=3, head_dim=8, conv=4, chunk=4, out_norm=False,
                                       proj_bias=True),
    # inner given (heads 6 from it), norm then gate, no conv bias
    "mamba2-E24-P4-G2-normfirst-noconvbias": m2(state=4, inner=24, head_dim=4, groups=2, conv=3, chunk=4,
                                                norm_before_gate=True, conv_bias=False),
    "mamba2-H2-P8-G2-projbias": m2(state=8, heads=2, head_dim=8, groups=2, conv=4, chunk=4, proj_bias=True),
}
MAIN = "mamba2-N8-P8-G2-K4-C4"
COSTS = {"mamba2-N16-P16-G4-K2-D32": (m2(32, state=16, expand=2, conv=2, head_dim=16, groups=4, chunk=8), 32),
         "mamba2-H5-P16-D32-all-off": (m2(32, state=16, heads=5, head_dim=16, conv=2, chunk=8, out_norm=False,
                                          conv_bias=False), 32)}

globals().update(contract_tests(Mamba2, SPECS, main=MAIN, costs=COSTS))
globals().update(parity_tests(Pair(Mamba2, mamba2, SPECS), main=MAIN))

# Which transformers mixer reproduces which spec: Mamba2Mixer and NemotronHMamba2Mixer have the gated norm only in
# the gate-then-norm order (use_bias, use_conv_bias, n_groups; NemotronH takes the head count and head_dim
# explicitly); FalconH1Mixer also has norm_before_gate, mamba_rms_norm (out_norm) and mamba_d_ssm (inner).
PLAIN_NORM = [s for s, v in SPECS.items() if v.out_norm and not v.norm_before_gate]


def _hf_mamba2(layer, spec):
    pytest.importorskip("transformers")
    from transformers import Mamba2Config
    from transformers.models.mamba2.modeling_mamba2 import Mamba2Mixer

    cfg = Mamba2Config(hidden_size=DIM, state_size=spec.state, expand=spec.inner // DIM, conv_kernel=spec.conv,
                       head_dim=spec.head_dim, num_heads=spec.heads, n_groups=spec.groups,
                       chunk_size=spec.chunk, time_step_limit=(0.0, float("inf")), layer_norm_epsilon=1e-5,
                       use_bias=spec.proj_bias, use_conv_bias=spec.conv_bias, num_hidden_layers=1)
    hf = Mamba2Mixer(cfg, 0).eval()
    assert hf.intermediate_size == spec.inner
    hf.load_state_dict(layer.state_dict())
    return cfg, hf


def _hf_nemotron_h(layer, spec):
    pytest.importorskip("transformers")
    nemotron = pytest.importorskip("transformers.models.nemotron_h.modeling_nemotron_h",
                                   reason="this transformers has no NemotronH")
    from transformers import NemotronHConfig

    cfg = NemotronHConfig(hidden_size=DIM, ssm_state_size=spec.state, mamba_num_heads=spec.heads,
                          mamba_head_dim=spec.head_dim, n_groups=spec.groups, conv_kernel=spec.conv,
                          chunk_size=spec.chunk, time_step_min=0.0, time_step_limit=(0.0, float("inf")),
                          layer_norm_epsilon=1e-5, use_bias=spec.proj_bias, use_conv_bias=spec.conv_bias,
                          layers_block_type=["mamba"], num_hidden_layers=1)
    hf = nemotron.NemotronHMamba2Mixer(cfg, 0).eval()
    hf.load_state_dict(layer.state_dict())
    return cfg, hf


def _hf_falcon_h1(layer, spec):
    """FalconH1Mixer with its muP multipliers at 1 (ssm_in_multiplier, ssm_multipliers; mup_vector of ones): the
    multipliers are Falcon-H1's model-level scaling, not part of the mixer's parameterization."""
    pytest.importorskip("transformers")
    falcon = pytest.importorskip("transformers.models.falcon_h1.modeling_falcon_h1",
                                 reason="this transformers has no Falcon-H1")
    from transformers import FalconH1Config

    cfg = FalconH1Config(hidden_size=DIM, mamba_d_ssm=spec.inner, mamba_n_heads=spec.heads,
                         mamba_d_head=spec.head_dim, mamba_d_state=spec.state, mamba_d_conv=spec.conv,
                         mamba_n_groups=spec.groups, mamba_chunk_size=spec.chunk, mamba_rms_norm=spec.out_norm,
                         mamba_norm_before_gate=spec.norm_before_gate, mamba_proj_bias=spec.proj_bias,
                         projectors_bias=spec.proj_bias, mamba_conv_bias=spec.conv_bias, rms_norm_eps=1e-5,
                         time_step_limit=(0.0, float("inf")), ssm_in_multiplier=1.0, ssm_multipliers=[1.0] * 5,
                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2, head_dim=8)
    hf = falcon.FalconH1Mixer(cfg, 0).eval()
    hf.mup_vector = torch.ones(1, 1, hf.in_proj.out_features)
    hf.load_state_dict(layer.state_dict())
    return cfg, hf


def _named(tests: dict, oracle: str) -> dict:
    return {name.replace("transformers", oracle): fn for name, fn in tests.items()}


globals().update(mixer_tests(Mamba2, {s: SPECS[s] for s in PLAIN_NORM}, _hf_mamba2))
globals().update(_named(mixer_tests(Mamba2, {s: SPECS[s] for s in PLAIN_NORM}, _hf_nemotron_h), "nemotron_h"))
globals().update(_named(mixer_tests(Mamba2, SPECS, _hf_falcon_h1), "falcon_h1"))


def test_resolve_keeps_explicit_options():
    m2 = {"state": 16, "expand": 2, "conv": 4, "head_dim": 8, "groups": 2, "chunk": 64}
    assert spec_class("mamba2").resolve(m2, 16) == {**m2, "heads": 4, "inner": 32}


@pytest.mark.parametrize("options, widths", [
    ({"heads": 3, "head_dim": 8}, (3, 24)),
    ({"inner": 48, "head_dim": 16}, (3, 48)),
    ({"heads": 4, "inner": 32, "head_dim": 8, "expand": 4}, (4, 32)),   # explicit widths win over expand
    ({"expand": 3, "head_dim": 8}, (6, 48)),
], ids=["heads", "inner", "both-win-over-expand", "expand"])
def test_resolve_widths(options, widths):
    out = spec_class("mamba2").resolve({"heads": "auto", "inner": "auto", **options}, 16)
    assert (out["heads"], out["inner"]) == widths


@pytest.mark.parametrize("options, match", [
    ({"expand": 2, "head_dim": 12}, "head_dim"),
    ({"expand": 2, "head_dim": 8, "groups": 3}, "groups"),
    ({"expand": 1.3, "head_dim": 8}, "expand"),
    ({"heads": 3, "inner": 32, "head_dim": 8}, "must equal heads\\*head_dim"),
    ({"inner": 20, "head_dim": 8}, "inner=20 is not divisible"),
    ({"heads": 3, "head_dim": 8, "groups": 2}, "groups"),
    ({"heads": 0, "head_dim": 8}, "heads"),
], ids=["m2-headdim", "m2-groups", "m2-expand", "heads-inner", "inner-headdim", "heads-groups", "heads-zero"])
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


def test_options_set_the_parameters():
    names = lambda s: {k: tuple(v.shape) for k, v in Mamba2(DIM, SPECS[s]).state_dict().items()}  # noqa: E731
    falcon = names("mamba2-H3-P8-nonorm-projbias")
    assert "norm.weight" not in falcon and falcon["in_proj.bias"] == (24 + 40 + 3,) and falcon["out_proj.bias"] == (16,)
    assert falcon["out_proj.weight"] == (16, 24)
    normfirst = names("mamba2-E24-P4-G2-normfirst-noconvbias")
    assert "conv1d.bias" not in normfirst and "in_proj.bias" not in normfirst and normfirst["A_log"] == (6,)


def test_norm_before_gate_is_the_other_order():
    """norm_before_gate=True: weight * rmsnorm_groupwise(y) * silu(z), by hand."""
    from hybridc_torch.layers.mamba2 import RMSNormGated

    y, z = torch.randn(2, 3, 8), torch.randn(2, 3, 8)
    norm = RMSNormGated(8, group_size=4, norm_before_gate=True)
    norm.weight.data = torch.randn(8)
    yg = y.unflatten(-1, (2, 4))
    want = norm.weight * (yg / (yg.pow(2).mean(-1, keepdim=True) + 1e-5).sqrt()).flatten(-2) * F.silu(z)
    torch.testing.assert_close(norm(y, z), want)


def test_jax_rejects_a_head_dim_not_dividing_the_width():
    with pytest.raises(ValueError, match="head_dim"):
        mamba2.init(DIM, NS(state=4, inner=16, heads=3, conv=4, head_dim=5, groups=1, chunk=4, out_norm=True,
                            norm_before_gate=False, proj_bias=False, conv_bias=True), key=jax.random.PRNGKey(0))


@pytest.mark.parametrize("spec_id", list(SPECS))
def test_fused_cpu_ops_give_the_reference_gradients(spec_id, monkeypatch):
    """On CPU the layer runs the fused conv + silu and gated norm (C++, reading its projection's slices in place):
    the output and the gradients of the input and of every parameter equal those with the reference ops
    (HYBRIDC_KERNEL), at an odd length with an initial state."""
    pytest.importorskip("hybridc_torch.ops._cpp_library").load() or pytest.skip("no C++ toolchain")
    torch.manual_seed(0)
    layer = Mamba2(DIM, SPECS[spec_id])
    x = torch.randn(3, 7, DIM)
    state = {k: torch.randn_like(v) for k, v in layer.init_state(3).items()}

    def run():
        xs = x.clone().requires_grad_()
        layer.zero_grad()
        out, new = layer(xs, state)
        (out.pow(2).sum() + new["ssm"].sum() + new["conv"].sum()).backward()
        return [out, xs.grad] + [p.grad for p in layer.parameters()]

    fused = run()
    monkeypatch.setenv("HYBRIDC_KERNEL", "causal_conv1d=reference,rms_norm_gated=reference")
    for got, want in zip(fused, run()):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
