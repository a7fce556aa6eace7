"""flash-linear-attention (fla) as the outside oracle for delta_net, gated_delta_net and rwkv.

fla's own layers need Triton kernels (no CPU path), so parity is checked two ways: (1) state_dict names/shapes/init
against fla layers *constructed* on CPU under the same seed, (2) outputs against fla's forward transcribed with fla's
CPU reference pieces (naive recurrences, rms_norm_ref, naive_gdn_gate, token_shift_ref, gate_output_correction_ref...).
Without fla installed these tests skip (`needs_fla`); the names below are then absent.
"""
from __future__ import annotations

import warnings

import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

from _torch_delta_contract import TOL, build, x_input  # noqa: E402

try:
    with warnings.catch_warnings():   # fla warns on import that Triton is missing (CPU)
        warnings.simplefilter("ignore")
        import fla  # noqa: F401
    HAVE_FLA = True
except ImportError:
    HAVE_FLA = False

if HAVE_FLA:   # fla present: a missing piece is a failure, not a skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import fla.layers as fla_layers
        from fla.layers.rwkv7 import RWKV7Attention  # noqa: F401  (the rwkv tests' oracle pieces, from here on)
        from fla.models.rwkv7.modeling_rwkv7 import RWKV7FeedForward  # noqa: F401
        from fla.modules.norm.layernorm import rms_norm_ref
        from fla.modules.norm.layernorm_gated import rms_norm_ref as gated_rms_norm_ref
        from fla.modules.token_shift import token_shift_ref  # noqa: F401
        from fla.ops.delta_rule.naive import delta_rule_recurrence
        from fla.ops.gated_delta_rule.gate import naive_gdn_gate
        from fla.ops.gated_delta_rule.naive import naive_recurrent_gated_delta_rule
        from fla.ops.generalized_delta_rule.dplr.naive import dplr_recurrence  # noqa: F401
        from fla.ops.rwkv7.fused_addcmul import torch_addcmul_rwkv7  # noqa: F401
        from fla.ops.rwkv7.fused_k_update import k_update_ref  # noqa: F401
        from fla.ops.rwkv7.gate_output_correction import gate_output_correction_ref  # noqa: F401

needs_fla = pytest.mark.skipif(not HAVE_FLA, reason="flash-linear-attention (fla) is not installed")


def fla_module(cls, **kw):
    """An fla module constructed under seed 0 (fla warns about missing Triton on CPU)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(0)
        return cls(**kw)


def assert_same_names_shapes(ours, ref):
    a, b = ours.state_dict(), ref.state_dict()
    assert a.keys() == b.keys()
    assert all(a[k].shape == b[k].shape for k in a)
    return a, b


def state_dict_tests(make, twins: dict) -> dict:
    """Our layer (`make(name)` under seed 0) has exactly the state_dict (names, shapes, values) of its fla twin
    (twins: name -> a function building the fla module)."""

    @needs_fla
    @pytest.mark.parametrize("name", list(twins))
    def test_state_dict_matches_fla_exactly(name):
        a, b = assert_same_names_shapes(build(make, name, randomize=False), twins[name]())
        assert all(torch.equal(a[k], b[k]) for k in a)

    return {"test_state_dict_matches_fla_exactly": test_state_dict_matches_fla_exactly}


def _conv_ref(conv, p):
    """fla ShortConvolution semantics: causal depthwise conv (zero history) + SiLU."""
    W = conv.weight.shape[-1]
    return F.silu(F.conv1d(p.transpose(1, 2), conv.weight, conv.bias, padding=W - 1, groups=p.shape[-1])
                  [..., :p.shape[1]].transpose(1, 2))


def _fla_l2norm(x):
    return x / torch.sqrt(x.square().sum(-1, keepdim=True) + 1e-6)


def delta_family_forward(m, x, gated):
    """fla DeltaNet/GatedDeltaNet.forward transcribed with fla's CPU reference pieces."""
    def qkv(n):
        p = getattr(m, f"{n}_proj")(x)
        return _conv_ref(getattr(m, f"{n}_conv1d"), p) if m.conv_size else F.silu(p)
    H, Hv = m.num_heads, getattr(m, "num_v_heads", m.num_heads)
    q, k = (qkv(n).unflatten(-1, (H, -1)) for n in "qk")
    v = qkv("v").unflatten(-1, (Hv, -1))
    q, k = (_fla_l2norm(t).repeat_interleave(Hv // H, dim=-2) for t in (q, k))   # fla's GVA: q, k per value head
    beta = m.b_proj(x).sigmoid() * (2 if getattr(m, "allow_neg_eigval", False) else 1)   # fla: beta * 2
    if gated:
        g = naive_gdn_gate(m.a_proj(x), m.A_log, m.dt_bias)
        o, _ = naive_recurrent_gated_delta_rule(q, k, v, beta, g)
    else:
        o, _ = delta_rule_recurrence(*(t.transpose(1, 2) for t in (q, k, v, beta)))
        o = o.transpose(1, 2)
    if m.use_gate:
        o = gated_rms_norm_ref(o, m.o_norm.weight, None, z=m.g_proj(x).unflatten(-1, (Hv, -1)), eps=1e-5)
    else:
        o = rms_norm_ref(o, m.o_norm.weight, None, eps=1e-5)
    return m.o_proj(o.flatten(-2))


def delta_family_forward_tests(make, names: list, *, gated: bool) -> dict:
    """Our (randomized) DeltaNet / GatedDeltaNet against fla's forward transcribed (`delta_family_forward`)."""

    @needs_fla
    @pytest.mark.parametrize("name", names)
    def test_matches_fla_forward_math(name):
        m = build(make, name)
        x = x_input()
        with torch.no_grad():
            torch.testing.assert_close(m(x)[0], delta_family_forward(m, x, gated=gated), **TOL)

    return {"test_matches_fla_forward_math": test_matches_fla_forward_math}
