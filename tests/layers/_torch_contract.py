"""The torch layer contract for layers with a flat decode state (mamba, mamba2, gru, griffin_lru, mlp).

`contract_tests(cls, specs, main=...)` returns the tests below parametrized over one kind's specs; a kind file adds
them to its namespace (`globals().update(...)`). Shapes, state layout and dtypes, gradients, causality, decoding
equality (prefill + steps, with and without ctx, chunked prefill; fp32 and fp64), no in-place state mutation, bf16
with fp32 recurrent state, unknown `impl=`, init under a seed, and the core's cost formulas against the module.

Glossary of dimension letters:
    B: batch    L: sequence length    D: model dim
"""
from __future__ import annotations

import pytest

from hybridc.kinds import spec_class

torch = pytest.importorskip("torch")

DIM = 16


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


def contract_tests(cls, specs: dict, *, main: str, costs: dict | None = None, impl: bool = True) -> dict:
    """The contract tests of torch layer class `cls` over `specs` (id -> spec namespace with `kind`).

    main: the spec the dtype checks (fp64, bf16) and the `impl=` check run on. costs: cost cases (id -> (spec, dim))
    checked besides every spec at DIM; None leaves the cost test out. impl: whether `cls` takes `impl=`
    ('reference' runs, an unknown one raises naming the valid ones)."""
    ids = list(specs)

    def make(spec_id: str, seed: int = 0, dim: int = DIM):
        torch.manual_seed(seed)
        return cls(dim, specs[spec_id])

    @pytest.mark.parametrize("spec_id", ids)
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

    @pytest.mark.parametrize("spec_id", ids)
    def test_gradient_reaches_every_parameter(spec_id):
        layer = make(spec_id)
        y, state = layer(rand_x(), layer.init_state(2))
        (y.pow(2).sum() + sum(s.float().pow(2).sum() for s in state.values())).backward()
        for name, p in layer.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, name

    @pytest.mark.parametrize("t", [0, 3, 6], ids=lambda t: f"t{t}")
    @pytest.mark.parametrize("spec_id", ids)
    def test_causality(spec_id, t):
        layer = make(spec_id)
        x = rand_x()
        x2 = x.clone()
        x2[:, t] += 1.0
        with torch.no_grad():
            y, y2 = layer(x)[0], layer(x2)[0]
        assert torch.equal(y[:, :t], y2[:, :t])
        assert not torch.allclose(y[:, t], y2[:, t])

    @pytest.mark.parametrize("L1", [0, 3, 7], ids=lambda n: f"L1-{n}")
    @pytest.mark.parametrize("spec_id", ids)
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

    @pytest.mark.parametrize("L1", [0, 2], ids=lambda n: f"L1-{n}")
    @pytest.mark.parametrize("spec_id", ids)
    def test_decoding_equality_without_ctx(spec_id, L1):
        layer = make(spec_id)
        x = rand_x(length=4)
        with torch.no_grad():
            torch.testing.assert_close(decode(layer, x, L1, with_ctx=False)[0], layer(x)[0], rtol=0, atol=1e-5)

    @pytest.mark.parametrize("spec_id", ids)
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

    @pytest.mark.parametrize("spec_id", [main])
    def test_decoding_equality_fp64(spec_id):
        layer = make(spec_id).double()
        x = rand_x(length=6, dtype=torch.float64)
        with torch.no_grad():
            y_dec, state = decode(layer, x, 2)
            torch.testing.assert_close(y_dec, layer(x)[0], rtol=0, atol=1e-12)
        assert all(v.dtype == torch.float64 for k, v in state.items() if k != "pos")

    @pytest.mark.parametrize("spec_id", ids)
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

    @pytest.mark.parametrize("spec_id", [main])
    def test_bf16_runs_with_fp32_recurrent_state(spec_id):
        layer = make(spec_id).to(torch.bfloat16)
        x = rand_x(length=4, dtype=torch.bfloat16)
        with torch.no_grad():
            y, state = decode(layer, x, 2)
        assert y.dtype == torch.bfloat16 and torch.isfinite(y.float()).all()
        for key, value in state.items():
            assert value.dtype == {"conv": torch.bfloat16, "pos": torch.int64}.get(key, torch.float32), key

    @pytest.mark.parametrize("spec_id", [main])
    def test_unknown_impl_raises(spec_id):
        spec = specs[spec_id]
        layer = cls(DIM, spec, impl="reference")
        layer(rand_x(length=2))
        with pytest.raises(ValueError, match="reference"):
            cls(DIM, spec, impl="nope")(rand_x(length=2))

    cost_cases = {**{k: (v, DIM) for k, v in specs.items()}, **(costs or {})}

    @pytest.mark.parametrize("case", list(cost_cases))
    def test_costs_match_module(case):
        spec, dim = cost_cases[case]
        torch.manual_seed(0)
        layer = cls(dim, spec)
        ir_spec = spec_class(spec.kind)(**vars(spec))   # the core's spec: its formulas are methods
        assert ir_spec.params(dim) == sum(p.numel() for p in layer.parameters())
        assert ir_spec.state_numel(dim) == sum(t.numel() for t in layer.init_state(1).values()
                                               if t.is_floating_point())
        fl = ir_spec.flops(dim)
        # every weight takes part in >= 1 multiply-add per token, a bias in >= 1 add (the 2*dim slack: out biases)
        biases = sum(p.numel() for n, p in layer.named_parameters() if n.endswith("bias"))
        assert isinstance(fl, int) and fl >= 2 * ir_spec.params(dim) - biases - 2 * dim

    @pytest.mark.parametrize("spec_id", ids)
    def test_init_is_deterministic_under_seed(spec_id):
        a, b, c = make(spec_id, seed=3), make(spec_id, seed=3), make(spec_id, seed=4)
        for (name, pa), pb, pc in zip(a.named_parameters(), b.parameters(), c.parameters()):
            assert torch.equal(pa, pb), name
        assert any(not torch.equal(pa, pc) for pa, pc in zip(a.parameters(), c.parameters()))

    tests = {name: fn for name, fn in locals().items() if name.startswith("test_")}
    if not impl:
        del tests["test_unknown_impl_raises"]
    if costs is None:
        del tests["test_costs_match_module"]
    return tests
