"""The JAX layer against the torch layer, for layers with a flat decode state (mamba, mamba2, gru, griffin_lru, mlp).

The torch layer is built seeded, its state_dict copied into a JAX params dict, and both run on the same input:
outputs, gradients of a scalar loss w.r.t. every parameter and the input, and decoding (prefill + steps, final states
included) must agree. Also: `init` has exactly the torch keys, shapes and init distributions, `init_state` the torch
state layout, and `apply`/`step` work under `jax.jit` (with a traced `pos_offset`) and `jax.vmap`.

`parity_tests(Pair(torch_cls, module, specs), main=...)` returns these tests (`test_jax_*`) parametrized over one
kind's specs. Compile time dominates on CPU, so each spec's jitted apply/step/grad is built once (`Pair.jitted`) and
shared by the tests, the kind file's own included.

Glossary of dimension letters:
    B: batch    L: sequence length    D: model dim / channels    N: state size    G: groups    H: heads    P: head dim
"""
from __future__ import annotations

import functools
from types import SimpleNamespace as NS

import numpy as np
import pytest

torch = pytest.importorskip("torch")
jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402

DIM, BATCH, LENGTH = 16, 2, 7


def rand(*shape, seed=1):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def close(a, b, tol=1e-4):
    """Values equal to `tol`, relative to the scale of `b` (elementwise rtol plus an atol of tol * max|b|)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol * max(np.abs(b).max(initial=0.0), 1e-6))


def to_np(state: dict) -> dict:
    return {k: (v.detach().numpy() if isinstance(v, torch.Tensor) else np.asarray(v)) for k, v in state.items()}


def close_states(js: dict, ts: dict, tol=1e-4):
    assert js.keys() == ts.keys()
    for k in ts:
        close(to_np(js)[k], to_np(ts)[k], tol)


def torch_decode(layer, x, L1):
    state = layer.init_state(x.shape[0])
    with torch.no_grad():
        y0, state = layer(x[:, :L1], state, {"pos_offset": 0})
        ys = [y0]
        for t in range(L1, x.shape[1]):
            y_t, state = layer.step(x[:, t], state, {"pos_offset": t})
            ys.append(y_t[:, None])
    return torch.cat(ys, dim=1), state


class Pair:
    """One kind's torch layer class and JAX module over its specs, with each spec's jitted functions built once."""

    def __init__(self, torch_cls, module, specs: dict):
        self.torch_cls, self.module, self.specs = torch_cls, module, specs

    def make(self, spec_id: str, seed: int = 0):
        """(torch layer, spec, jax params copied from the torch state_dict)."""
        spec = self.specs[spec_id]
        torch.manual_seed(seed)
        layer = self.torch_cls(DIM, spec)
        params = {k: jnp.asarray(v.detach().numpy()) for k, v in layer.state_dict().items()}
        return layer, spec, params

    @functools.lru_cache(maxsize=None)
    def jitted(self, spec_id: str) -> NS:
        """Jitted apply (with state, traced pos_offset), step (traced pos_offset) and grad of sum(y * w) (no state)."""
        spec, module = self.specs[spec_id], self.module

        def loss(p, x, w):
            y = module.apply(p, x, spec)[0]  # (B, L, D)
            return jnp.sum(y * w), y

        return NS(apply=jax.jit(lambda p, x, s, pos: module.apply(p, x, spec, s, {"pos_offset": pos})),
                  step=jax.jit(lambda p, x_t, s, pos: module.step(p, x_t, spec, s, {"pos_offset": pos})),
                  grad=jax.jit(jax.grad(loss, argnums=(0, 1), has_aux=True)))

    def decode(self, spec_id, params, x, L1):
        """Prefill x[:, :L1] from init_state, then step the rest (jitted, traced pos_offset). Returns (y, state)."""
        fns, spec = self.jitted(spec_id), self.specs[spec_id]
        state = self.module.init_state(DIM, spec, x.shape[0])
        y0, state = fns.apply(params, x[:, :L1], state, jnp.int32(0))
        ys = [y0]
        for t in range(L1, x.shape[1]):
            y_t, state = fns.step(params, x[:, t], state, jnp.int32(t))
            ys.append(y_t[:, None])
        return jnp.concatenate(ys, axis=1), state


def parity_tests(pair: Pair, *, main: str, vmap: bool = True) -> dict:
    """The JAX module of `pair` against its torch layer class over its specs.

    init: every spec. Forward and gradients: `main`. Decoding: `main` at prefill 0, 3 and L, every other spec at
    prefill 3. vmap (when `vmap`): `main`."""
    torch_cls, module, specs = pair.torch_cls, pair.module, pair.specs
    decode_cases = [(main, n) for n in (0, 3, LENGTH)] + [(s, 3) for s in specs if s != main]

    @pytest.mark.parametrize("spec_id", list(specs))
    def test_jax_init_matches_torch_keys_shapes_distributions_and_state_layout(spec_id):
        """Exactly torch's keys and shapes, fp32. Fixed inits (A_log, D, norm, zero biases) equal torch's;
        random ones match torch's in mean, std and quartiles (pooled over 96 seeds / keys). init_state: torch's
        layout."""
        spec = specs[spec_id]
        seeds, t_all = 96, {}
        for seed in range(seeds):
            torch.manual_seed(seed)
            for k, v in torch_cls(DIM, spec).state_dict().items():
                t_all.setdefault(k, []).append(v.numpy())
        keys = jax.random.split(jax.random.PRNGKey(0), seeds)
        j_all = jax.jit(jax.vmap(lambda key: module.init(DIM, spec, key=key)))(keys)
        assert sorted(j_all) == sorted(t_all)  # (jit returns dicts key-sorted; eager init keeps torch's order)
        for k, ts in t_all.items():
            t, j = np.stack(ts), np.asarray(j_all[k])
            assert j.shape == t.shape and j.dtype == np.float32, k
            if np.all(t == t[0]):  # deterministic init
                np.testing.assert_allclose(j, t, rtol=1e-6, err_msg=k)
                continue
            sd = t.std()
            assert abs(j.mean() - t.mean()) < 0.25 * sd and 0.8 < j.std() / sd < 1.25, k
            np.testing.assert_allclose(np.quantile(j, [0.25, 0.5, 0.75]), np.quantile(t, [0.25, 0.5, 0.75]),
                                       atol=0.4 * sd, err_msg=k)
        j_state, t_state = module.init_state(DIM, spec, 3), torch_cls(DIM, spec).init_state(3)
        assert j_state.keys() == t_state.keys()
        for k, v in t_state.items():
            assert j_state[k].shape == tuple(v.shape) and not bool(jnp.any(j_state[k])), k
            assert j_state[k].dtype == (jnp.int32 if k == "pos" else jnp.float32), k

    @pytest.mark.parametrize("spec_id", [main])
    def test_jax_forward_and_gradients_match_torch(spec_id):
        """Stateless forward, and d(sum(y * w))/d(every parameter, x): torch autograd vs jax.grad, 1e-4 relative."""
        layer, _, params = pair.make(spec_id)
        x, w = rand(BATCH, LENGTH, DIM), rand(BATCH, LENGTH, DIM, seed=2)
        tx = torch.from_numpy(x).requires_grad_(True)
        t_y, none = layer(tx)
        assert none is None
        (t_y * torch.from_numpy(w)).sum().backward()
        (g_params, g_x), j_y = pair.jitted(spec_id).grad(params, jnp.asarray(x), jnp.asarray(w))
        close(j_y, t_y.detach().numpy())
        assert g_params.keys() == dict(layer.named_parameters()).keys()
        for name, p in layer.named_parameters():
            close(g_params[name], p.grad.numpy())
        close(g_x, tx.grad.numpy())

    @pytest.mark.parametrize("spec_id,L1", decode_cases, ids=[f"{s}-prefill{n}" for s, n in decode_cases])
    def test_jax_decoding_matches_torch(spec_id, L1):
        """Jitted prefill + jitted steps (traced pos_offset) equal torch's forward output and torch's own decoding
        (outputs and final state). prefill = L is the forward with a state."""
        layer, _, params = pair.make(spec_id)
        x = rand(BATCH, LENGTH, DIM)
        with torch.no_grad():
            t_full, _ = layer(torch.from_numpy(x))
        t_dec, t_state = torch_decode(layer, torch.from_numpy(x), L1)
        j_dec, j_state = pair.decode(spec_id, params, jnp.asarray(x), L1)
        close(j_dec, t_full)
        close(j_dec, t_dec)
        close_states(j_state, t_state)

    @pytest.mark.parametrize("spec_id", [main])
    def test_jax_vmap_over_inputs_and_states(spec_id):
        """jit(vmap(apply)) over a stack of (x, state) pairs equals the jitted apply of each pair (traced
        pos_offset)."""
        _, spec, params = pair.make(spec_id)
        xs = jnp.asarray(rand(2, BATCH, LENGTH, DIM))  # (V, B, L, D)
        states = jax.tree.map(lambda v: jnp.stack([v, v + 1]), module.init_state(DIM, spec, BATCH))
        run = lambda p, x, s, pos: module.apply(p, x, spec, s, {"pos_offset": pos})  # noqa: E731
        y_vmap, s_vmap = jax.jit(jax.vmap(run, in_axes=(None, 0, 0, None)))(params, xs, states, jnp.int32(0))
        for i in range(2):
            y_i, s_i = pair.jitted(spec_id).apply(params, xs[i], {k: v[i] for k, v in states.items()}, jnp.int32(0))
            close(y_vmap[i], y_i, 1e-5)
            close_states({k: v[i] for k, v in s_vmap.items()}, s_i, 1e-5)

    tests = {name: fn for name, fn in locals().items() if name.startswith("test_")}
    if not vmap:
        del tests["test_jax_vmap_over_inputs_and_states"]
    return tests
