"""The torch layer contract for the delta-rule family and RWKV-7 (delta_net, gated_delta_net, rwkv and its channel
mix): forward shape, zero init state and its dtypes, gradients, causality, decoding equality (prefill + steps, no
in-place state mutation, final states; nested states such as an rwkv chain's included), and the core's cost formulas
against the module.

`contract_tests(make, layers, states=..., costs=...)` returns these tests parametrized over one kind's layers; a kind
file adds them to its namespace (`globals().update(...)`). The published inits zero some weights (o_proj, LoRA down),
which would hide gradients and bugs, so `build` randomizes every parameter.

Dimension glossary: B batch, L sequence length, D model dim, H heads, K head dim.
"""
from __future__ import annotations

from types import SimpleNamespace as NS

import pytest

from hybridc.kinds import spec_class
from hybridc.kinds._ffn import FFNSpec

torch = pytest.importorskip("torch")

from hybridc_torch.layers.delta_net import DeltaNet  # noqa: E402
from hybridc_torch.layers.gated_delta_net import GatedDeltaNet  # noqa: E402
from hybridc_torch.layers.rwkv import RWKV7, RWKV7ChannelMix  # noqa: E402

B, L, D = 2, 11, 32
TOL = dict(atol=1e-5, rtol=1e-5)


def build(make, name, randomize=True):
    """make(name) under seed 0; with `randomize`, matrices ~ unit gain and everything else small."""
    torch.manual_seed(0)
    m = make(name)
    if randomize:
        with torch.no_grad():
            for p in m.parameters():
                p.copy_(torch.randn_like(p) * (p.shape[-1] ** -0.5 if p.dim() == 2 else 0.2))
    return m


def x_input(seed=1, length=L):
    return torch.randn(B, length, D, generator=torch.Generator().manual_seed(seed))


def _flat(st):
    return {f"{k}.{k2}": v2 for k, v in st.items() for k2, v2 in _flat(v).items()} if isinstance(st, dict) \
        else {"": st}


def resolved(kind, options, dim):
    """The core's spec for `options` (auto resolved), as a namespace the torch layers read."""
    cls = spec_class(kind)
    return NS(**cls(**cls.resolve(options, dim)).model_dump())


def _core_spec(spec):
    """The core's spec (its cost formulas are methods) for a test namespace."""
    if spec.kind == "rwkv_cmix":
        return FFNSpec(mult=spec.mult, act="relu2", token_shift=True)
    fields = spec_class(spec.kind).model_fields
    # model_construct: any shape the layer takes
    return spec_class(spec.kind).model_construct(**{k: v for k, v in vars(spec).items() if k in fields})


def _module(dim, spec):
    cls = {"delta_net": DeltaNet, "gated_delta_net": GatedDeltaNet, "rwkv": RWKV7}.get(spec.kind)
    return RWKV7ChannelMix(dim, spec.mult) if cls is None else cls(dim, spec)


def contract_tests(make, layers: list, *, states: list, costs: dict) -> dict:
    """The contract over `layers` (names make(name) builds: a module with forward(x, state, ctx) -> (y, state),
    step and init_state). states: the layers whose init_state is checked (a flat dict with a "recurrent" entry or
    none). costs: cost cases (id -> (dim, spec namespace with `kind`))."""

    @pytest.mark.parametrize("name", layers)
    def test_forward_shape_and_no_state(name):
        y, st = build(make, name)(x_input())
        assert y.shape == (B, L, D) and st is None and torch.isfinite(y).all()

    @pytest.mark.parametrize("name", states)
    def test_init_state_zeros_and_dtypes(name):
        m = build(make, name)
        for dtype in (torch.float32, torch.bfloat16):
            st = m.init_state(3, dtype=dtype)
            assert all(t.shape[0] == 3 and not t.any() for t in st.values())
            if "recurrent" in st:
                assert st["recurrent"].dtype == torch.float32
            assert all(t.dtype == dtype for k, t in st.items() if k != "recurrent")

    @pytest.mark.parametrize("name", layers)
    def test_gradient_reaches_every_parameter(name):
        m = build(make, name)
        y, _ = m(x_input())
        (y * torch.randn_like(y)).sum().backward()
        missing = [n for n, p in m.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
        assert not missing

    @pytest.mark.parametrize("t", [0, 4, L - 1], ids=lambda t: f"t{t}")
    @pytest.mark.parametrize("name", layers)
    def test_causality(name, t):
        m = build(make, name)
        x = x_input()
        x2 = x.clone()
        x2[:, t] += torch.randn(B, D)
        with torch.no_grad():
            y, y2 = m(x)[0], m(x2)[0]
        assert torch.equal(y[:, :t], y2[:, :t])
        assert not torch.allclose(y[:, t:], y2[:, t:])

    @pytest.mark.parametrize("L1", [0, 1, 6, L], ids=lambda n: f"B{B}-L{L}-prefill{n}")
    @pytest.mark.parametrize("name", layers)
    def test_decoding_equals_forward(name, L1):
        m = build(make, name)
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

    @pytest.mark.parametrize("case", list(costs))
    def test_cost_formulas_match_module(case):
        dim, spec = costs[case]
        m = _module(dim, spec)
        core = _core_spec(spec)
        assert core.params(dim) == sum(p.numel() for p in m.parameters())
        assert core.state_numel(dim) == sum(t.numel() for t in m.init_state(1).values())
        matmul_params = sum(p.numel() for p in m.parameters() if p.dim() == 2)
        assert isinstance(core.flops(dim), int) and core.flops(dim) >= 2 * matmul_params

    return {name: fn for name, fn in locals().items() if name.startswith("test_")}
