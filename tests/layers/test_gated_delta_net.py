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
from _torch_delta_contract import D, build, contract_tests, resolved
from hybridc.kinds import spec_class
from hybridc_jax.layers import gated_delta_net as jgdn
from hybridc_torch.layers.gated_delta_net import GatedDeltaNet

def gdn(heads, head_dim, expand_v, conv, gate, v_heads=None, v_head_dim=None, neg_eigval=False):
    return NS(kind="gated_delta_net", heads=heads, v_heads=v_heads or heads, head_dim=head_dim, expand_v=expand_v,
              v_head_dim=v_head_dim, conv=conv, gate=gate, neg_eigval=neg_eigval)


SPECS = {
    "gdn-H2-K8-ev2-conv4-gate": gdn(2, 8, 2, 4, True),
    "gdn-H4-K8-ev1.5-conv2": gdn(4, 8, 1.5, 2, False),
    "gdn-H2-K8-ev1.5-conv2-gate": gdn(2, 8, 1.5, 2, True),
    "gdn-H2-Hv4-K8-V12-conv4-gate": gdn(2, 8, 2, 4, True, v_heads=4, v_head_dim=12),   # GVA, v_head_dim wins
    "gdn-H1-Hv3-K8-ev1-conv2": gdn(1, 8, 1, 2, False, v_heads=3),
    "gdn-H2-Hv4-K8-ev1.5-conv4-gate-negeig": gdn(2, 8, 1.5, 4, True, v_heads=4, neg_eigval=True),  # beta in (0, 2)
    "gdn-H2-Hv4-K8-ev1.5-conv4-gate": gdn(2, 8, 1.5, 4, True, v_heads=4),
}
JAX_LAYERS = ["gdn-H2-K8-ev1.5-conv2-gate", "gdn-H2-Hv4-K8-V12-conv4-gate", "gdn-H2-Hv4-K8-ev1.5-conv4-gate-negeig"]
COSTS = {**{n: (D, s) for n, s in SPECS.items()},
         "gdn-D64-defaults-auto": (64, resolved("gated_delta_net", {"heads": 2, "head_dim": "auto"}, 64)),
         "gdn-D64-Hv6-V20": (64, resolved("gated_delta_net", {"heads": 2, "v_heads": 6, "head_dim": 8,
                                                              "v_head_dim": 20}, 64))}


def make(name):
    return GatedDeltaNet(D, SPECS[name])


globals().update(contract_tests(make, list(SPECS), states=list(SPECS), costs=COSTS))
globals().update(parity_tests(make, lambda name: jax_layer(jgdn, SPECS[name]), JAX_LAYERS, vmap=JAX_LAYERS))
globals().update(state_dict_tests(make, {
    "gdn-H2-K8-ev2-conv4-gate": lambda: fla_module(fo.fla_layers.GatedDeltaNet, hidden_size=D, num_heads=2,
                                                   head_dim=8, expand_v=2, use_gate=True),
    "gdn-H4-K8-ev1.5-conv2": lambda: fla_module(fo.fla_layers.GatedDeltaNet, hidden_size=D, num_heads=4, head_dim=8,
                                                expand_v=1.5, conv_size=2, use_gate=False),
    "gdn-H2-Hv4-K8-V12-conv4-gate": lambda: fla_module(fo.fla_layers.GatedDeltaNet, hidden_size=D, num_heads=2,
                                                       num_v_heads=4, head_dim=8, expand_v=1.5, use_gate=True),
    "gdn-H2-Hv4-K8-ev1.5-conv4-gate-negeig": lambda: fla_module(fo.fla_layers.GatedDeltaNet, hidden_size=D,
                                                                num_heads=2, num_v_heads=4, head_dim=8, expand_v=1.5,
                                                                use_gate=True, allow_neg_eigval=True),
}))
globals().update(delta_family_forward_tests(make, list(SPECS), gated=True))


def test_resolve_rejects_a_fractional_value_head_dim():
    with pytest.raises(ValueError, match="integer"):
        spec_class("gated_delta_net").resolve({"head_dim": 8, "expand_v": 1.3}, 64)


def test_layer_rejects_a_fractional_value_head_dim():
    with pytest.raises(ValueError, match="integer"):
        GatedDeltaNet(D, gdn(2, 8, 1.3, 4, True))


def test_jax_init_distributions():
    """nn.Linear / nn.Conv1d uniform bounds, unit norms, A_log ~ log U(0, 16), dt = softplus(dt_bias) in [1e-3, 0.1]."""
    spec = SPECS["gdn-H2-K8-ev1.5-conv2-gate"]
    p = jax.jit(lambda key: jgdn.init(D, NS(**{**vars(spec), "heads": 64, "v_heads": 64}), key=key))(FAST_KEY)
    assert 0.9 * D ** -0.5 < np.abs(p["q_proj.weight"]).max() <= D ** -0.5
    assert 0.9 * 2 ** -0.5 < np.abs(p["v_conv1d.weight"]).max() <= 2 ** -0.5
    assert (p["o_norm.weight"] == 1).all() and (p["A_log"] < np.log(16)).all() and p["A_log"].std() > 0.3
    dt = jax.nn.softplus(p["dt_bias"])
    close(jax.numpy.clip(dt, 1e-3, 0.1), dt, rtol=1e-5, atol=0)
    assert dt.min() < 3e-3 and dt.max() > 3e-2


def test_jax_rejects_a_fractional_value_head_dim():
    with pytest.raises(ValueError, match="expand_v"):
        jgdn.init(D, gdn(2, 8, 1.3, 4, False), key=jax.random.PRNGKey(0))


def test_resolve_rejects_value_heads_not_a_multiple_of_heads():
    with pytest.raises(ValueError, match="not a multiple of heads=2"):
        spec_class("gated_delta_net").resolve({"heads": 2, "v_heads": 3}, 64)


@pytest.mark.parametrize("cls", [GatedDeltaNet, lambda dim, spec: jgdn.init(dim, spec, key=FAST_KEY)],
                         ids=["torch", "jax"])
def test_layers_reject_value_heads_not_a_multiple_of_heads(cls):
    with pytest.raises(ValueError, match="v_heads a multiple of heads"):
        cls(D, gdn(2, 8, 2, 4, True, v_heads=3))


def _qwen3_next_layer(spec):
    """transformers' Qwen3NextGatedDeltaNet with the sizes of `spec` (gate on, norm eps 1e-5 as ours), or a skip."""
    qn = pytest.importorskip("transformers.models.qwen3_next.modeling_qwen3_next",
                             reason="transformers has no qwen3_next")
    cfg = qn.Qwen3NextConfig(hidden_size=D, linear_num_key_heads=spec.heads, linear_num_value_heads=spec.v_heads,
                             linear_key_head_dim=spec.head_dim, linear_value_head_dim=spec.v_head_dim,
                             linear_conv_kernel_dim=spec.conv, rms_norm_eps=1e-5, hidden_act="silu",
                             num_hidden_layers=1, layer_types=["linear_attention"])
    return qn, qn.Qwen3NextGatedDeltaNet(cfg, layer_idx=0)


def qwen3_next_to_ours(sd, spec):
    """Qwen3-Next's fused, per-key-head interleaved weights -> ours. in_proj_qkvz rows are, per key head h, [q_h (K),
    k_h (K), v of its r = Hv/H value heads (r V), z of them (r V)]; in_proj_ba rows per key head [b (r), a (r)];
    conv1d channels are [q (H K), k (H K), v (Hv V)]; z is our g_proj, norm our o_norm, out_proj our o_proj."""
    H, Hv, K, V = spec.heads, spec.v_heads, spec.head_dim, spec.v_head_dim
    r = Hv // H
    qkvz = sd["in_proj_qkvz.weight"].unflatten(0, (H, 2 * K + 2 * r * V))             # (H, 2K + 2rV, D)
    q, k, v, z = qkvz.split([K, K, r * V, r * V], dim=1)
    b, a = sd["in_proj_ba.weight"].unflatten(0, (H, 2 * r)).split([r, r], dim=1)      # (H, r, D) each
    conv_q, conv_k, conv_v = sd["conv1d.weight"].split([H * K, H * K, Hv * V], dim=0)
    return {"A_log": sd["A_log"], "dt_bias": sd["dt_bias"], **{f"{n}_proj.weight": t.flatten(0, 1) for n, t in
            dict(q=q, k=k, v=v, a=a, b=b, g=z).items()}, "q_conv1d.weight": conv_q, "k_conv1d.weight": conv_k,
            "v_conv1d.weight": conv_v, "o_norm.weight": sd["norm.weight"], "o_proj.weight": sd["out_proj.weight"]}


@pytest.mark.parametrize("name", ["gdn-H2-Hv4-K8-V12-conv4-gate"])
def test_matches_transformers_qwen3_next_with_its_weights(name, monkeypatch):
    """Qwen3-Next's linear-attention layer (GVA: 2 key heads, 4 value heads; K 8, V 12), random weights mapped to
    ours, forward to 1e-5 in fp32 (the torch path: transformers' torch_chunk_gated_delta_rule; with fla installed
    transformers would call fla's Triton kernel, which has no CPU driver, so the wrapped torch function is used)."""
    import torch
    spec = SPECS[name]
    torch.manual_seed(0)
    qn, ref = _qwen3_next_layer(spec)
    monkeypatch.setattr(qn, "torch_chunk_gated_delta_rule", qn.torch_chunk_gated_delta_rule.__wrapped__)
    with torch.no_grad():
        for p in ref.parameters():
            p.copy_(torch.randn_like(p) * (p.shape[-1] ** -0.5 if p.dim() == 2 else 0.2))
    ours = GatedDeltaNet(D, spec)
    ours.load_state_dict(qwen3_next_to_ours(ref.state_dict(), spec))
    x = torch.randn(2, 11, D, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(ours(x)[0], ref(x), atol=1e-5, rtol=1e-5)


def test_neg_eigval_doubles_beta_as_fla():
    """fla's GatedDeltaNet(allow_neg_eigval=True) keeps the flag under the name ours has; beta = 2 sigmoid(b)."""
    import torch
    if fo.HAVE_FLA:
        assert fla_module(fo.fla_layers.GatedDeltaNet, hidden_size=D, num_heads=2, head_dim=8,
                          allow_neg_eigval=True).allow_neg_eigval
    on, off = (build(make, n) for n in ("gdn-H2-Hv4-K8-ev1.5-conv4-gate-negeig", "gdn-H2-Hv4-K8-ev1.5-conv4-gate"))
    x = torch.randn(2, 5, D)
    torch.testing.assert_close(on._gates(x)[1], 2 * off._gates(x)[1], atol=0, rtol=0)
