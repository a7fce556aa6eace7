"""JAX DeltaNet / Gated DeltaNet / RWKV-7 (+ channel mix) layers and kernels against the torch backend.

Parity: the torch layer is built seeded (weights randomized: the published inits zero some matrices), its state_dict is
copied into the JAX params dict, and both run on the same input: outputs, gradients of a scalar loss w.r.t. every
parameter (torch autograd vs jax.grad), prefill + step decoding and final states must agree (the kernels' parity tests are in tests/ops/). Everything JAX runs under jax.jit (eager dispatch of
small ops is slower than compiling on a 2-core box).

Dimension glossary: B batch, L / T sequence length, D model dim, H heads, K key head dim, V value head dim.
"""
from __future__ import annotations

import functools
from functools import partial
from types import SimpleNamespace as NS

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hybridc_jax.layers import delta_net as jdelta
from hybridc_jax.layers import gated_delta_net as jgdn
from hybridc_jax.layers import rwkv as jrwkv
from hybridc_jax.layers.common import layer_norm
from hybridc_torch.layers.delta_net import DeltaNet
from hybridc_torch.layers.gated_delta_net import GatedDeltaNet
from hybridc_torch.layers.rwkv import RWKV7, RWKV7ChannelMix
from hybridc_torch.model import run_mixer

B, L, D = 2, 9, 32
TOL = dict(atol=1e-4, rtol=1e-4)
FAST_KEY = jax.random.key(0, impl="unsafe_rbg")   # typed key: the inits take any key; compiles ~2x faster than threefry


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    """Tiny tensors: intra-op threads only add contention on a loaded 2-core box."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def to_jax(tree):
    """Nested dicts of torch tensors -> the same of jnp arrays."""
    return jax.tree.map(lambda t: jnp.asarray(t.detach().numpy()), tree)


def close(a, b, **tol):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), **(tol or TOL))


# --------------------------------------------------------------------------------------------- layers under test
def rwkv_spec(value_residual, **kw):
    return NS(kind="rwkv", head_dim=8, decay_rank=8, a_rank=8, v_rank=4, gate_rank=16,
              value_residual=value_residual, **kw)


CMIX = NS(kind="rwkv_cmix", mult=4)
CHAIN = (("att0", RWKV7, jrwkv, rwkv_spec(False)), ("ffn0", RWKV7ChannelMix, None, CMIX),
         ("att1", RWKV7, jrwkv, rwkv_spec(True, layer_idx=1, n_layers=2)))


class TorchChain(torch.nn.Module):
    """att0 -> ffn0 -> att1, pre-norm residual, threading v_first as the torch model does: att0 passes its values
    on as v_first, att1 lerps towards them."""

    def __init__(self, dim):
        super().__init__()
        for n, cls, _, spec in CHAIN:
            setattr(self, n, cls(dim, spec.mult) if cls is RWKV7ChannelMix else cls(dim, spec))

    def init_state(self, batch_size):
        return {n: getattr(self, n).init_state(batch_size) for n, *_ in CHAIN}

    def _run(self, x, state, step):
        v_first, new = None, {}
        for n, *_ in CHAIN:
            y, new[n], v_first = run_mixer(getattr(self, n), F.layer_norm(x, x.shape[-1:]),
                                           None if state is None else state[n], None, v_first, step=step)
            x = x + y
        return x, new

    def forward(self, x, state=None, ctx=None):
        y, new = self._run(x, state, step=False)
        return y, None if state is None else new

    def step(self, x_t, state, ctx=None):
        return self._run(x_t, state, step=True)


class JaxLayer(NS):
    """Uniform handle on a JAX layer kind: init / init_state / apply / step with the spec bound."""


def _jax_handle(spec, init, init_state, apply, step):
    return JaxLayer(init=partial(init, D, spec), init_state=partial(init_state, D, spec),
                    apply=lambda params, x, state=None, ctx=None: apply(params, x, spec, state, ctx),
                    step=lambda params, x_t, state, ctx=None: step(params, x_t, spec, state, ctx))


def _jax_single(mod, spec):
    return _jax_handle(spec, mod.init, mod.init_state, mod.apply, mod.step)


def _jax_cmix(spec):
    return _jax_handle(spec, jrwkv.init_channel_mix, jrwkv.channel_mix_init_state, jrwkv.channel_mix_apply,
                       jrwkv.channel_mix_step)


def _jax_chain():
    parts = {n: (_jax_cmix(spec) if mod is None else _jax_single(mod, spec)) for n, _, mod, spec in CHAIN}
    unit = jnp.ones((D,))

    def run(params, x, state, fn):
        new, v_first = {}, None   # att0 passes its values on as v_first, att1 lerps towards them (as the model does)
        for n, _, mod, spec in CHAIN:
            sub = {k[len(n) + 1:]: v for k, v in params.items() if k.startswith(n + ".")}
            h, st = layer_norm(x, unit, 0 * unit), None if state is None else state[n]
            if mod is None:   # the channel mix
                y, new[n] = getattr(parts[n], fn)(sub, h, state=st)
            else:             # rwkv time mixing: takes and returns v_first
                y, new[n], v_first = getattr(mod, fn)(sub, h, spec, st, None, v_first)
            x = x + y
        return x, (None if state is None and fn == "apply" else new)

    def init(*, key):
        keys = jax.random.split(key, len(parts))
        return {f"{n}.{k}": v for kk, (n, p) in zip(keys, parts.items()) for k, v in p.init(key=kk).items()}

    return JaxLayer(init=init, init_state=lambda b: {n: p.init_state(b) for n, p in parts.items()},
                    apply=lambda params, x, state=None, ctx=None: run(params, x, state, "apply"),
                    step=lambda params, x_t, state, ctx=None: run(params, x_t, state, "step"))


SPECS = {
    "delta_net-H4-K8-conv4": (DeltaNet, jdelta, NS(kind="delta_net", heads=4, head_dim=8, conv=4, gate=False)),
    "delta_net-H2-K8-conv0-gate": (DeltaNet, jdelta, NS(kind="delta_net", heads=2, head_dim=8, conv=0, gate=True)),
    "gdn-H2-K8-ev1.5-conv2-gate": (GatedDeltaNet, jgdn, NS(kind="gated_delta_net", heads=2, head_dim=8,
                                                            expand_v=1.5, conv=2, gate=True)),
    "rwkv_cmix-mult4": (RWKV7ChannelMix, None, CMIX),
}
# The chain holds a first rwkv layer (publishes v_first), a channel mix and a value-residual rwkv layer; a lone
# first-layer rwkv would only repeat its att0 (kept out to stay within the test time budget).
LAYERS = [*SPECS, "rwkv-chain-value-residual"]


def build_torch(name, randomize=True):
    torch.manual_seed(0)
    if name == "rwkv-chain-value-residual":
        m = TorchChain(D)
    else:
        cls, _, spec = SPECS[name]
        m = cls(D, spec.mult) if cls is RWKV7ChannelMix else cls(D, spec)
    if randomize:   # matrices ~ unit gain, everything else small (as the torch layer tests)
        with torch.no_grad():
            for p in m.parameters():
                p.copy_(torch.randn_like(p) * (p.shape[-1] ** -0.5 if p.dim() == 2 else 0.2))
    return m


@functools.cache
def build_jax(name) -> JaxLayer:
    """One handle per layer, with its jitted apply / step, so compilations are shared between tests."""
    if name == "rwkv-chain-value-residual":
        jl = _jax_chain()
    else:
        _, mod, spec = SPECS[name]
        jl = _jax_cmix(spec) if mod is None else _jax_single(mod, spec)
    jl.jit_apply, jl.jit_step = jax.jit(jl.apply), jax.jit(jl.step)
    return jl


def pair(name):
    """(torch layer, its params as a JAX dict, JAX layer handle)."""
    m = build_torch(name)
    return m, to_jax(m.state_dict()), build_jax(name)


def x_input(seed=1, length=L):
    return torch.randn(B, length, D, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------------------------- init / state contract
@pytest.mark.parametrize("name", LAYERS)
def test_init_has_torch_keys_shapes_and_state_shapes(name):
    m, jl = build_torch(name, randomize=False), build_jax(name)
    params = jax.eval_shape(lambda key: jl.init(key=key), jax.random.PRNGKey(0))   # traced, not run
    sd = m.state_dict()
    assert params.keys() == sd.keys()
    assert all(params[k].shape == tuple(v.shape) and params[k].dtype == jnp.float32 for k, v in sd.items())
    t_st, j_st = m.init_state(3), jl.init_state(3)
    assert jax.tree.structure(to_jax(t_st)) == jax.tree.structure(j_st)
    assert all(a.shape == b.shape and a.dtype == b.dtype and not b.any()
               for a, b in zip(jax.tree.leaves(to_jax(t_st)), jax.tree.leaves(j_st)))


def test_delta_family_init_distributions():
    """nn.Linear / nn.Conv1d uniform bounds, unit norms, A_log ~ log U(0, 16), dt = softplus(dt_bias) in [1e-3, 0.1]."""
    spec = SPECS["gdn-H2-K8-ev1.5-conv2-gate"][2]
    p = jax.jit(lambda key: jgdn.init(D, NS(**{**vars(spec), "heads": 64}), key=key))(FAST_KEY)
    assert 0.9 * D ** -0.5 < np.abs(p["q_proj.weight"]).max() <= D ** -0.5
    assert 0.9 * 2 ** -0.5 < np.abs(p["v_conv1d.weight"]).max() <= 2 ** -0.5
    assert (p["o_norm.weight"] == 1).all() and (p["A_log"] < np.log(16)).all() and p["A_log"].std() > 0.3
    dt = jax.nn.softplus(p["dt_bias"])
    close(jnp.clip(dt, 1e-3, 0.1), dt, rtol=1e-5, atol=0)
    assert dt.min() < 3e-3 and dt.max() > 3e-2


def test_rwkv_init_matches_torch_layer2of5():
    """Everything but the random (orthogonal) matrices equals torch's init; orthogonal ones have torch's gains."""
    layer_idx, n_layers = 2, 5   # depth-dependent curves away from their layer-0 special cases
    spec = rwkv_spec(True, layer_idx=layer_idx, n_layers=n_layers)
    sd = to_jax(RWKV7(D, spec).state_dict())
    cm = to_jax(RWKV7ChannelMix(D, 4, layer_idx=layer_idx, n_layers=n_layers).state_dict())
    cspec = NS(mult=4, layer_idx=layer_idx, n_layers=n_layers)
    params, cparams = jax.jit(lambda k: (jrwkv.init(D, spec, key=k), jrwkv.init_channel_mix(D, cspec, key=k)))(
        FAST_KEY)
    for k in sd:
        if k in ("r_proj.weight", "k_proj.weight", "v_proj.weight") or k.endswith("lora.2.weight"):
            w, wt = params[k], sd[k]   # W W^T (or W^T W) = gain^2 I on the smaller side, same gain as torch's
            gram = (lambda a: a @ a.T) if w.shape[0] <= w.shape[1] else (lambda a: a.T @ a)
            close(gram(w), gram(wt), atol=1e-5, rtol=1e-5)
        else:
            close(params[k], sd[k], atol=0, rtol=0)
    close(cparams["x_k"], cm["x_k"], atol=0, rtol=0)
    close(cparams["key.weight"].T @ cparams["key.weight"], jnp.eye(D), atol=1e-5, rtol=0)   # (F, D), F > D


# --------------------------------------------------------------------------------------------- parity with torch
@pytest.mark.parametrize("name", LAYERS)
def test_forward_and_gradients_match_torch(name):
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


@pytest.mark.parametrize("name", LAYERS)
@pytest.mark.parametrize("L1", [0, 5], ids=lambda n: f"B{B}-L{L}-prefill{n}")
def test_decoding_matches_torch_and_own_forward(name, L1):
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


@pytest.mark.parametrize("name", ["gdn-H2-K8-ev1.5-conv2-gate", "rwkv-chain-value-residual"])
def test_vmap_over_a_leading_axis(name):
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


# ------------------------------------------------------------------------------------------ RWKV value residual, errors
def _abstract_params(spec):
    return jax.eval_shape(lambda key: jrwkv.init(D, spec, key=key), jax.random.PRNGKey(0))


def test_value_residual_needs_v_first():
    spec = rwkv_spec(True)
    with pytest.raises(RuntimeError, match="v_first"):
        jax.eval_shape(lambda p, x: jrwkv.apply(p, x, spec), _abstract_params(spec), jnp.zeros((B, 3, D)))


def test_first_rwkv_layer_publishes_v_first_in_apply_and_step():
    """(Values through v_first are covered by the rwkv-chain parity tests.)"""
    spec = rwkv_spec(False)

    def publish(fn, params, x, *state):
        return fn(params, x, spec, *state)[-1]   # the v_first it passes on

    p = _abstract_params(spec)
    assert jax.eval_shape(partial(publish, jrwkv.apply), p, jnp.ones((B, 3, D))).shape == (B, 3, D)
    st = jrwkv.init_state(D, spec, B)
    assert jax.eval_shape(partial(publish, jrwkv.step), p, jnp.ones((B, D)), st).shape == (B, D)


@pytest.mark.parametrize("mod,spec,match", [
    (jgdn, NS(heads=2, head_dim=8, expand_v=1.3, conv=4, gate=False), "expand_v"),
    (jdelta, NS(heads=0, head_dim=8, conv=4, gate=False), "heads"),
    (jrwkv, NS(**{**vars(rwkv_spec(False)), "head_dim": 12}), "divisible"),
], ids=["gdn-expand_v", "delta_net-heads0", "rwkv-head_dim"])
def test_bad_specs_raise(mod, spec, match):
    with pytest.raises(ValueError, match=match):
        mod.init(D, spec, key=jax.random.PRNGKey(0))
