"""The JAX layer against the torch layer for the delta-rule family and RWKV-7 (delta_net, gated_delta_net, rwkv and
its channel mix).

The torch layer is built seeded (weights randomized: the published inits zero some matrices), its state_dict is
copied into the JAX params dict, and both run on the same input: outputs, gradients of a scalar loss w.r.t. every
parameter (torch autograd vs jax.grad), prefill + step decoding and final states must agree; `init` has the torch
keys and shapes and `init_state` the torch state structure. Everything JAX runs under jax.jit (eager dispatch of small
ops is slower than compiling on a 2-core box).

`parity_tests(make_torch, make_jax, layers, vmap=...)` returns these tests (`test_jax_*`) over one kind's layers.

Dimension glossary: B batch, L sequence length, D model dim, H heads, K key head dim, V value head dim.
"""
from __future__ import annotations

import functools
from functools import partial
from types import SimpleNamespace as NS

import numpy as np
import pytest

from _torch_delta_contract import build

torch = pytest.importorskip("torch")
jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402

B, L, D = 2, 9, 32
TOL = dict(atol=1e-4, rtol=1e-4)
FAST_KEY = jax.random.key(0, impl="unsafe_rbg")   # typed key: the inits take any key; compiles ~2x faster than threefry


def to_jax(tree):
    """Nested dicts of torch tensors -> the same of jnp arrays."""
    return jax.tree.map(lambda t: jnp.asarray(t.detach().numpy()), tree)


def close(a, b, **tol):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), **(tol or TOL))


def x_input(seed=1, length=L):
    return torch.randn(B, length, D, generator=torch.Generator().manual_seed(seed))


class JaxLayer(NS):
    """Uniform handle on a JAX layer kind: init / init_state / apply / step with the spec bound."""


def jax_handle(spec, init, init_state, apply, step):
    return JaxLayer(init=partial(init, D, spec), init_state=partial(init_state, D, spec),
                    apply=lambda params, x, state=None, ctx=None: apply(params, x, spec, state, ctx),
                    step=lambda params, x_t, state, ctx=None: step(params, x_t, spec, state, ctx))


def jax_layer(mod, spec):
    """The handle of JAX layer module `mod` (init, init_state, apply, step)."""
    return jax_handle(spec, mod.init, mod.init_state, mod.apply, mod.step)


def parity_tests(make_torch, make_jax, layers: list, *, vmap: list) -> dict:
    """make_torch(name): the torch module (built seeded and randomized as the torch contract does); make_jax(name):
    its JaxLayer handle. vmap: the layers also checked under jax.vmap."""

    @functools.cache
    def build_jax(name) -> JaxLayer:
        """One handle per layer, with its jitted apply / step, so compilations are shared between tests."""
        jl = make_jax(name)
        jl.jit_apply, jl.jit_step = jax.jit(jl.apply), jax.jit(jl.step)
        return jl

    def pair(name):
        """(torch layer, its params as a JAX dict, JAX layer handle)."""
        m = build(make_torch, name)
        return m, to_jax(m.state_dict()), build_jax(name)

    @pytest.mark.parametrize("name", layers)
    def test_jax_init_has_torch_keys_shapes_and_state_shapes(name):
        m, jl = build(make_torch, name, randomize=False), build_jax(name)
        params = jax.eval_shape(lambda key: jl.init(key=key), jax.random.PRNGKey(0))   # traced, not run
        sd = m.state_dict()
        assert params.keys() == sd.keys()
        assert all(params[k].shape == tuple(v.shape) and params[k].dtype == jnp.float32 for k, v in sd.items())
        t_st, j_st = m.init_state(3), jl.init_state(3)
        assert jax.tree.structure(to_jax(t_st)) == jax.tree.structure(j_st)
        assert all(a.shape == b.shape and a.dtype == b.dtype and not b.any()
                   for a, b in zip(jax.tree.leaves(to_jax(t_st)), jax.tree.leaves(j_st)))

    @pytest.mark.parametrize("name", layers)
    def test_jax_forward_and_gradients_match_torch(name):
        m, params, jl = pair(name)
        x = x_input()
        w = torch.randn(B, L, D, generator=torch.Generator().manual_seed(7))
        y_t, _ = m(x.requires_grad_(True))
        (y_t * w).sum().backward()

        def loss(params, x):
            y, st = jl.apply(params, x)
            return jnp.sum(y * jnp.asarray(w.numpy())), (y, st)

        grad_fn = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))
        (_, (y, st)), (g_p, g_x) = grad_fn(params, jnp.asarray(x.detach().numpy()))
        assert st is None
        close(y, y_t.detach())
        g_torch = dict(m.named_parameters())
        assert g_p.keys() == g_torch.keys()
        for k, g in g_p.items():   # relative to the parameter's gradient scale
            ref = g_torch[k].grad.numpy()
            assert np.abs(np.asarray(g) - ref).max() <= 1e-4 * max(np.abs(ref).max(), 1e-6), k
        close(g_x, x.grad)

    @pytest.mark.parametrize("L1", [0, 5], ids=lambda n: f"B{B}-L{L}-prefill{n}")
    @pytest.mark.parametrize("name", layers)
    def test_jax_decoding_matches_torch_and_own_forward(name, L1):
        m, params, jl = pair(name)
        x = x_input()
        with torch.no_grad():
            y_t, st_t = m(x, m.init_state(B))
        xj = jnp.asarray(x.numpy())
        apply, step = jl.jit_apply, jl.jit_step
        y_full, st_full = apply(params, xj, jl.init_state(B))
        y1, st = apply(params, xj[:, :L1], jl.init_state(B))
        ys = [y1]
        for t in range(L1, L):
            y_step, st = step(params, xj[:, t], st)
            ys.append(y_step[:, None])
        close(jnp.concatenate(ys, 1), y_full, atol=1e-5, rtol=1e-5)
        close(y_full, y_t)
        assert jax.tree.structure(st) == jax.tree.structure(st_full) == jax.tree.structure(to_jax(st_t))
        for a, b, c in zip(jax.tree.leaves(st), jax.tree.leaves(st_full), jax.tree.leaves(to_jax(st_t))):
            close(a, b, atol=1e-5, rtol=1e-5)
            close(a, c)

    @pytest.mark.parametrize("name", vmap)
    def test_jax_vmap_over_a_leading_axis(name):
        """vmap over 2 independent (B, L, D) inputs (and states) equals running them one by one."""
        _, params, jl = pair(name)
        xs = jnp.stack([jnp.asarray(x_input(s, 4).numpy()) for s in (1, 2)])             # (2, B, 4, D)
        st0 = jax.tree.map(lambda a: jnp.stack([a, a]), jl.init_state(B))
        fn = jax.jit(jax.vmap(jl.apply, in_axes=(None, 0, 0)))
        ys, sts = fn(params, xs, st0)
        for i in range(2):
            y_i, st_i = jl.jit_apply(params, xs[i], jl.init_state(B))
            close(ys[i], y_i, atol=1e-5, rtol=1e-5)
            for a, b in zip(jax.tree.leaves(sts), jax.tree.leaves(st_i)):
                close(a[i], b, atol=1e-5, rtol=1e-5)

    tests = {name: fn for name, fn in locals().items() if name.startswith("test_")}
    if not vmap:
        del tests["test_jax_vmap_over_a_leading_axis"]
    return tests
