"""DeltaNet / GatedDeltaNet / RWKV7 / RWKV7ChannelMix torch layers: contract, decoding, fla parity, cost formulas.

fla's own layers need Triton kernels (no CPU path), so parity is checked two ways: (1) state_dict names/shapes/init
against fla layers *constructed* on CPU under the same seed, (2) outputs against fla's forward transcribed with fla's
CPU reference pieces (naive recurrences, rms_norm_ref, naive_gdn_gate, token_shift_ref, gate_output_correction_ref...).

Dimension glossary: B batch, L sequence length, D model dim, H heads, K head dim.
"""
from __future__ import annotations

import warnings
from types import SimpleNamespace as NS

import pytest
import torch
import torch.nn.functional as F

from hybridc.kinds import spec_class
from hybridc.kinds._ffn import FFNSpec
from hybridc.kinds._ffn import cmix_hidden as core_cmix_hidden
from hybridc_torch.layers.delta_net import DeltaNet
from hybridc_torch.layers.gated_delta_net import GatedDeltaNet
from hybridc_torch.layers.rwkv import RWKV7, RWKV7ChannelMix, cmix_hidden
from hybridc_torch.model import run_mixer

B, L, D = 2, 11, 32
TOL = dict(atol=1e-5, rtol=1e-5)


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    """Tiny tensors: intra-op threads only add contention (10-40x slower on a loaded 2-core box)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def rwkv_spec(value_residual, **kw):
    return NS(kind="rwkv", head_dim=8, decay_rank=8, a_rank=8, v_rank=4, gate_rank=16,
              value_residual=value_residual, **kw)


class RwkvChain(torch.nn.Module):
    """Pre-norm residual chain att0 -> ffn0 -> att1 threading v_first, as the model wires it: att0 returns its v as
    v_first, att1 (value_residual) lerps towards it."""

    def __init__(self, dim):
        super().__init__()
        self.att0, self.ffn0 = RWKV7(dim, rwkv_spec(False)), RWKV7ChannelMix(dim)
        self.att1 = RWKV7(dim, rwkv_spec(True, layer_idx=1, n_layers=2))

    def init_state(self, batch_size, device=None, dtype=torch.float32):
        return {n: getattr(self, n).init_state(batch_size, device, dtype) for n in ("att0", "ffn0", "att1")}

    def _run(self, x, state, step):
        v_first, new = None, {}
        for n in ("att0", "ffn0", "att1"):
            y, new[n], v_first = run_mixer(getattr(self, n), F.layer_norm(x, x.shape[-1:]),
                                           None if state is None else state[n], None, v_first, step=step)
            x = x + y
        return x, new

    def forward(self, x, state=None, ctx=None):
        y, new = self._run(x, state, step=False)
        return y, None if state is None else new

    def step(self, x_t, state, ctx=None):
        return self._run(x_t, state, step=True)


class AsMixer(torch.nn.Module):
    """An RWKV7 layer as the other layers run: (y, state) (a first rwkv layer takes no v_first; the v_first it
    returns is dropped)."""

    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def init_state(self, batch_size, device=None, dtype=torch.float32):
        return self.layer.init_state(batch_size, device, dtype)

    def forward(self, x, state=None, ctx=None):
        return self.layer(x, state, ctx)[:2]

    def step(self, x_t, state, ctx=None):
        return self.layer.step(x_t, state, ctx)[:2]


SPECS = {
    "delta_net-H4-K8-conv4": (DeltaNet, NS(kind="delta_net", heads=4, head_dim=8, conv=4, gate=False)),
    "delta_net-H2-K8-conv0-gate": (DeltaNet, NS(kind="delta_net", heads=2, head_dim=8, conv=0, gate=True)),
    "gdn-H2-K8-ev2-conv4-gate": (GatedDeltaNet, NS(kind="gated_delta_net", heads=2, head_dim=8, expand_v=2,
                                                   conv=4, gate=True)),
    "gdn-H4-K8-ev1.5-conv2": (GatedDeltaNet, NS(kind="gated_delta_net", heads=4, head_dim=8, expand_v=1.5,
                                                conv=2, gate=False)),
    "rwkv-K8-first": (RWKV7, rwkv_spec(False)),
    "rwkv_cmix-mult4": (RWKV7ChannelMix, NS(kind="rwkv_cmix", mult=4)),
}
LAYERS = [*SPECS, "rwkv-chain-value-residual"]


def build(name, randomize=True, dim=D):
    torch.manual_seed(0)
    if name == "rwkv-chain-value-residual":
        m = RwkvChain(dim)
    else:
        cls, spec = SPECS[name]
        m = cls(dim, spec.mult) if cls is RWKV7ChannelMix else cls(dim, spec)
        m = AsMixer(m) if cls is RWKV7 else m
    if randomize:   # the published inits zero some weights (o_proj, LoRA down), which would hide gradients/bugs
        with torch.no_grad():
            for p in m.parameters():   # matrices ~ unit-gain, everything else small
                p.copy_(torch.randn_like(p) * (p.shape[-1] ** -0.5 if p.dim() == 2 else 0.2))
    return m


def x_input(seed=1, length=L):
    return torch.randn(B, length, D, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------------------------- contract
@pytest.mark.parametrize("name", LAYERS)
def test_forward_shape_and_no_state(name):
    y, st = build(name)(x_input())
    assert y.shape == (B, L, D) and st is None and torch.isfinite(y).all()


@pytest.mark.parametrize("name", list(SPECS))
def test_init_state_zeros_and_dtypes(name):
    m = build(name)
    for dtype in (torch.float32, torch.bfloat16):
        st = m.init_state(3, dtype=dtype)
        assert all(t.shape[0] == 3 and not t.any() for t in st.values())
        if "recurrent" in st:
            assert st["recurrent"].dtype == torch.float32
        assert all(t.dtype == dtype for k, t in st.items() if k != "recurrent")


@pytest.mark.parametrize("name", LAYERS)
def test_gradient_reaches_every_parameter(name):
    m = build(name)
    y, _ = m(x_input())
    (y * torch.randn_like(y)).sum().backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


@pytest.mark.parametrize("name", LAYERS)
@pytest.mark.parametrize("t", [0, 4, L - 1], ids=lambda t: f"t{t}")
def test_causality(name, t):
    m = build(name)
    x = x_input()
    x2 = x.clone()
    x2[:, t] += torch.randn(B, D)
    with torch.no_grad():
        y, y2 = m(x)[0], m(x2)[0]
    assert torch.equal(y[:, :t], y2[:, :t])
    assert not torch.allclose(y[:, t:], y2[:, t:])


def _flat(st):
    return {f"{k}.{k2}": v2 for k, v in st.items() for k2, v2 in _flat(v).items()} if isinstance(st, dict) \
        else {"": st}


@pytest.mark.parametrize("name", LAYERS)
@pytest.mark.parametrize("L1", [0, 1, 6, L], ids=lambda n: f"B{B}-L{L}-prefill{n}")
def test_decoding_equals_forward(name, L1):
    m = build(name)
    x = x_input()
    with torch.no_grad():
        y_full, st_full = m(x, m.init_state(B))
        y1, st = m(x[:, :L1], m.init_state(B))
        ys = [y1]
        for t in range(L1, L):
            before = {k: v.clone() for k, v in _flat(st).items()}
            y_t, new = m.step(x[:, t], st)
            assert all(torch.equal(before[k], v) for k, v in _flat(st).items()), "step mutated its input state"
            ys.append(y_t[:, None])
            st = new
    torch.testing.assert_close(torch.cat(ys, 1), y_full, **TOL)
    torch.testing.assert_close(y_full, m(x)[0].detach(), atol=0, rtol=0)
    flat, flat_full, flat_init = _flat(st), _flat(st_full), _flat(m.init_state(B))
    assert flat.keys() == flat_full.keys() == flat_init.keys()
    for k in flat:
        assert flat[k].shape == flat_init[k].shape
        torch.testing.assert_close(flat[k], flat_full[k], **TOL)


def test_value_residual_needs_v_first():
    m = RWKV7(D, rwkv_spec(True))
    with pytest.raises(RuntimeError, match="v_first"):
        m(x_input())


def test_value_residual_reads_and_first_layer_returns_v_first():
    first, later = build("rwkv-K8-first").layer, build("rwkv-chain-value-residual").att1
    _, _, v_first = first(x_input())
    assert v_first.shape == (B, L, D)
    y_a, _, passed_on = later(x_input(2), v_first=v_first)
    assert passed_on is v_first
    y_b = later(x_input(2), v_first=v_first + 1.0)[0]
    assert not torch.allclose(y_a, y_b)
    _, _, v_step = first.step(x_input()[:, 0], first.init_state(B))
    assert v_step.shape == (B, D)


# --------------------------------------------------------------------------------------------- fla parity
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    fla_layers = pytest.importorskip("fla.layers")
    from fla.layers.rwkv7 import RWKV7Attention
    from fla.models.rwkv7.modeling_rwkv7 import RWKV7FeedForward
    from fla.modules.norm.layernorm import rms_norm_ref
    from fla.modules.norm.layernorm_gated import rms_norm_ref as gated_rms_norm_ref
    from fla.modules.token_shift import token_shift_ref
    from fla.ops.delta_rule.naive import delta_rule_recurrence
    from fla.ops.gated_delta_rule.gate import naive_gdn_gate
    from fla.ops.gated_delta_rule.naive import naive_recurrent_gated_delta_rule
    from fla.ops.generalized_delta_rule.dplr.naive import dplr_recurrence
    from fla.ops.rwkv7.fused_addcmul import torch_addcmul_rwkv7
    from fla.ops.rwkv7.fused_k_update import k_update_ref
    from fla.ops.rwkv7.gate_output_correction import gate_output_correction_ref


def _fla(cls, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(0)
        return cls(**kw)


def _assert_same_names_shapes(ours, ref):
    a, b = ours.state_dict(), ref.state_dict()
    assert a.keys() == b.keys()
    assert all(a[k].shape == b[k].shape for k in a)
    return a, b


FLA_TWINS = {
    "delta_net-H4-K8-conv4": lambda: _fla(fla_layers.DeltaNet, hidden_size=D, num_heads=4),
    "gdn-H2-K8-ev2-conv4-gate": lambda: _fla(fla_layers.GatedDeltaNet, hidden_size=D, num_heads=2, head_dim=8,
                                             expand_v=2, use_gate=True),
    "gdn-H4-K8-ev1.5-conv2": lambda: _fla(fla_layers.GatedDeltaNet, hidden_size=D, num_heads=4, head_dim=8,
                                          expand_v=1.5, conv_size=2, use_gate=False),
    "rwkv_cmix-mult4": lambda: _fla(RWKV7FeedForward, hidden_size=D, layer_idx=0, num_hidden_layers=1),
}


@pytest.mark.parametrize("name", list(FLA_TWINS))
def test_state_dict_matches_fla_exactly(name):
    a, b = _assert_same_names_shapes(build(name, randomize=False), FLA_TWINS[name]())
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_gated_output_delta_net_state_dict_matches_fla_exactly():
    torch.manual_seed(0)
    ours = DeltaNet(D, NS(heads=4, head_dim=8, conv=3, gate=True))
    a, b = _assert_same_names_shapes(ours, _fla(fla_layers.DeltaNet, hidden_size=D, num_heads=4, conv_size=3,
                                                use_gate=True))
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("layer_idx", [0, 2], ids=["layer0", "layer2of4"])
def test_rwkv_state_dict_matches_fla(layer_idx):
    torch.manual_seed(0)
    ours = RWKV7(D, rwkv_spec(layer_idx > 0, layer_idx=layer_idx, n_layers=4))
    ref = _fla(RWKV7Attention, hidden_size=D, head_dim=8, decay_low_rank_dim=8, a_low_rank_dim=8, v_low_rank_dim=4,
               gate_low_rank_dim=16, layer_idx=layer_idx, num_hidden_layers=4)
    a, b = _assert_same_names_shapes(ours, ref)
    orthogonal = {"r_proj.weight": 1.0, "k_proj.weight": 0.1, "v_proj.weight": 1.0}
    for k in a:
        if k in orthogonal or k.endswith("lora.2.weight"):   # random orthogonal (fla draws its RNG in another order)
            gain = orthogonal.get(k, 0.1)
            torch.testing.assert_close(a[k] @ a[k].T if a[k].shape[0] <= a[k].shape[1] else a[k].T @ a[k],
                                       gain ** 2 * torch.eye(min(a[k].shape)), atol=1e-5, rtol=0)
        else:
            torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=0, msg=k)


def _conv_ref(conv, p):
    """fla ShortConvolution semantics: causal depthwise conv (zero history) + SiLU."""
    W = conv.weight.shape[-1]
    return F.silu(F.conv1d(p.transpose(1, 2), conv.weight, conv.bias, padding=W - 1, groups=p.shape[-1])
                  [..., :p.shape[1]].transpose(1, 2))


def _fla_l2norm(x):
    return x / torch.sqrt(x.square().sum(-1, keepdim=True) + 1e-6)


def _fla_delta_family_forward(m, x, gated):
    """fla DeltaNet/GatedDeltaNet.forward transcribed with fla's CPU reference pieces."""
    def qkv(n):
        p = getattr(m, f"{n}_proj")(x)
        return _conv_ref(getattr(m, f"{n}_conv1d"), p) if m.conv_size else F.silu(p)
    H = m.num_heads
    q, k, v = (qkv(n).unflatten(-1, (H, -1)) for n in "qkv")
    q, k = _fla_l2norm(q), _fla_l2norm(k)
    beta = m.b_proj(x).sigmoid()
    if gated:
        g = naive_gdn_gate(m.a_proj(x), m.A_log, m.dt_bias)
        o, _ = naive_recurrent_gated_delta_rule(q, k, v, beta, g)
    else:
        o, _ = delta_rule_recurrence(*(t.transpose(1, 2) for t in (q, k, v, beta)))
        o = o.transpose(1, 2)
    if m.use_gate:
        o = gated_rms_norm_ref(o, m.o_norm.weight, None, z=m.g_proj(x).unflatten(-1, (H, -1)), eps=1e-5)
    else:
        o = rms_norm_ref(o, m.o_norm.weight, None, eps=1e-5)
    return m.o_proj(o.flatten(-2))


@pytest.mark.parametrize("name", [n for n in SPECS if n.startswith(("delta_net", "gdn"))])
def test_delta_family_matches_fla_forward_math(name):
    m = build(name)
    x = x_input()
    with torch.no_grad():
        torch.testing.assert_close(m(x)[0], _fla_delta_family_forward(m, x, gated=name.startswith("gdn")), **TOL)


def _fla_rwkv_forward(m, x, v_first=None):
    """fla RWKV7Attention.forward (fuse_norm=False) transcribed with fla's CPU reference pieces."""
    delta = token_shift_ref(x)
    xr, xw, xk, xv, xa, xg = torch_addcmul_rwkv7(x, delta, m.x_r, m.x_w, m.x_k, m.x_v, m.x_a, m.x_g)
    r, k, v = m.r_proj(xr), m.k_proj(xk), m.v_proj(xv)
    w = -0.6065306597126334 * m.w_lora(xw).sigmoid()
    v_raw = v
    v = v if v_first is None else torch.lerp(v, v_first, m.v_lora(xv).sigmoid())
    a, g = m.a_lora(xa).sigmoid(), m.g_lora(xg)
    heads = lambda t: t.unflatten(-1, (m.num_heads, m.head_dim))   # noqa: E731
    kk = F.normalize(heads(k * m.k_k), dim=-1, p=2.0)
    k = k_update_ref(k, a, m.k_a)
    r, w, k, a, v = map(heads, (r, w, k, a, v))
    tr = lambda t: t.transpose(1, 2)   # noqa: E731  dplr_recurrence uses (B, H, T, K) and scales q by K**-0.5
    o, _ = dplr_recurrence(tr(r * m.head_dim ** 0.5), tr(k), tr(v), tr(-kk), tr(kk * a), tr(w))
    o = m.g_norm(tr(o).reshape(-1, D)).view(B, -1, D)
    return m.o_proj(gate_output_correction_ref(o, r, k, m.r_k, v, g)), v_raw


def test_rwkv_matches_fla_forward_math_with_value_residual():
    chain = build("rwkv-chain-value-residual")
    x = x_input()
    with torch.no_grad():
        y0_ref, v_first = _fla_rwkv_forward(chain.att0, x)
        y0, _, ours = chain.att0(x)
        torch.testing.assert_close(y0, y0_ref, **TOL)
        torch.testing.assert_close(ours, v_first, atol=0, rtol=0)
        y1_ref, _ = _fla_rwkv_forward(chain.att1, x, v_first=v_first)
        torch.testing.assert_close(chain.att1(x, v_first=ours)[0], y1_ref, **TOL)
        ffn = chain.ffn0
        sqrelu = lambda t: F.relu(t).square()   # noqa: E731  fla's sqrelu_fwd (which is torch.compile'd: slow)
        ref = ffn.value(sqrelu(ffn.key(x.addcmul(token_shift_ref(x), ffn.x_k))))
        torch.testing.assert_close(ffn(x)[0], ref, **TOL)


# --------------------------------------------------------------------------------------------- cost formulas
def _resolved(kind, options, dim):
    """The core's spec for `options` (auto resolved), as a namespace the torch layers read."""
    cls = spec_class(kind)
    return NS(**cls(**cls.resolve(options, dim)).model_dump())


def _core_spec(spec):
    """The core's spec (its cost formulas are methods) for a test namespace."""
    if spec.kind == "rwkv_cmix":
        return FFNSpec(mult=spec.mult, act="relu2", token_shift=True)
    fields = spec_class(spec.kind).model_fields
    return spec_class(spec.kind).model_construct(**{k: v for k, v in vars(spec).items() if k in fields})  # any shape the layer takes


COST_CASES = {
    **{n: (D, s) for n, (c, s) in SPECS.items()},
    "delta_net-D48-H3-auto": (48, _resolved("delta_net", {"kind": "delta_net", "heads": 3}, 48)),
    "gdn-D64-defaults-auto": (64, _resolved("gated_delta_net", {"heads": 2, "head_dim": "auto"}, 64)),
    "rwkv-D64-auto-ranks-vr": (64, _resolved("rwkv", {"head_dim": 16, "value_residual": True}, 64)),
    "rwkv_cmix-D20-mult3.5": (20, NS(kind="rwkv_cmix", mult=3.5)),
}


def _module(dim, spec):
    cls = {"delta_net": DeltaNet, "gated_delta_net": GatedDeltaNet, "rwkv": RWKV7}.get(spec.kind)
    return RWKV7ChannelMix(dim, spec.mult) if cls is None else cls(dim, spec)


@pytest.mark.parametrize("case", list(COST_CASES))
def test_cost_formulas_match_module(case):
    dim, spec = COST_CASES[case]
    m = _module(dim, spec)
    core = _core_spec(spec)
    assert core.params(dim) == sum(p.numel() for p in m.parameters())
    assert core.state_numel(dim) == sum(t.numel() for t in m.init_state(1).values())
    matmul_params = sum(p.numel() for p in m.parameters() if p.dim() == 2)
    assert isinstance(core.flops(dim), int) and core.flops(dim) >= 2 * matmul_params


@pytest.mark.parametrize("dim,head_dim", [(256, 64), (512, 128), (96, 32)], ids=lambda v: str(v))
def test_rwkv_auto_ranks_follow_fla(dim, head_dim):
    ref = _fla(RWKV7Attention, hidden_size=dim, head_dim=head_dim, layer_idx=1, num_hidden_layers=2)
    got = spec_class("rwkv").resolve({"head_dim": head_dim, "value_residual": True}, dim)
    assert (got["decay_rank"], got["a_rank"], got["v_rank"], got["gate_rank"]) == \
        (ref.decay_low_rank_dim, ref.a_low_rank_dim, ref.v_low_rank_dim, ref.gate_low_rank_dim)


def test_resolve_auto_values_and_errors():
    assert spec_class("delta_net").resolve({"heads": 4, "head_dim": "auto"}, 64)["head_dim"] == 16
    assert spec_class("rwkv").resolve({}, 2048)["gate_rank"] == 224
    assert spec_class("rwkv").OWN_FFN["mult"] == 4 and spec_class("rwkv").OWN_FFN["token_shift"]
    assert cmix_hidden(20, 3.5) == core_cmix_hidden(20, 3.5) == 96
    opts = {"heads": 4, "head_dim": "auto"}
    spec_class("delta_net").resolve(opts, 64)
    assert opts["head_dim"] == "auto"   # returns a new dict
    bad = [({"heads": 3}, 64, "delta_net", "divisible"), ({"heads": 0}, 64, "delta_net", "heads"),
           ({"head_dim": 8, "expand_v": 1.3}, 64, "gated_delta_net", "integer"),
           ({"head_dim": 48}, 64, "rwkv", "divisible"), ({"conv": -1}, 64, "delta_net", "conv")]
    for opts, dim, kind, msg in bad:
        with pytest.raises(ValueError, match=msg):
            spec_class(kind).resolve(opts, dim)
    with pytest.raises(ValueError, match="mult"):
        FFNSpec(mult=-1, token_shift=True)
    with pytest.raises(KeyError):
        spec_class("mamab")


def test_layers_reject_inconsistent_specs():
    with pytest.raises(ValueError, match="divisible"):
        RWKV7(30, rwkv_spec(False))
    with pytest.raises(ValueError, match="integer"):
        GatedDeltaNet(D, NS(heads=2, head_dim=8, expand_v=1.3, conv=4, gate=True))
