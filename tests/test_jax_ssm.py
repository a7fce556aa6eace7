"""Parity tests of the JAX SSM/RNN mixers and kernels against the torch backend.

Layers (Mamba, Mamba-2, GRU, Griffin RG-LRU): the torch layer is built seeded, its state_dict copied into a JAX
params dict, and both run on the same input: outputs, gradients of a scalar loss w.r.t. every parameter and the
input, and decoding (prefill + steps, final states included) must agree. Also: `init` has exactly the torch keys,
shapes and init distributions, `init_state` the torch state layout, and `apply`/`step` work under `jax.jit` (with a
traced `pos_offset`) and `jax.vmap`. The kernels' parity tests are in tests/ops/.

Compile time dominates on CPU, so each spec's jitted apply/step/grad is built once (`jitted`) and shared by tests.

Glossary of dimension letters:
    B: batch    L: sequence length    D: model dim / channels    N: state size    G: groups    H: heads    P: head dim
"""

import functools
from types import SimpleNamespace as NS

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from hybridc_jax.layers import griffin_lru, gru, mamba, mamba2
from hybridc_torch.layers.griffin_lru import GriffinLRU, _SqrtBoundDerivative
from hybridc_torch.layers.gru import GRU
from hybridc_torch.layers.mamba import Mamba
from hybridc_torch.layers.mamba2 import Mamba2

DIM, BATCH, LENGTH = 16, 2, 7
KINDS = {"mamba": (Mamba, mamba), "mamba2": (Mamba2, mamba2), "gru": (GRU, gru), "griffin_lru": (GriffinLRU, griffin_lru)}
SPECS = {
    "mamba-N4-E2-K4-R3": NS(kind="mamba", state=4, expand=2, conv=4, dt_rank=3),
    "mamba2-N8-P8-G2-K4-C4": NS(kind="mamba2", state=8, expand=2, conv=4, head_dim=8, groups=2, chunk=4),
    "gru-H16": NS(kind="gru", hidden=16),
    "gru-H12-proj": NS(kind="gru", hidden=12),
    "griffin-W24-M4-K4": NS(kind="griffin_lru", width=24, heads=4, conv=4),
    "griffin-W16-M2-K1": NS(kind="griffin_lru", width=16, heads=2, conv=1),
}
SPEC_IDS = list(SPECS)
MAIN_IDS = ["mamba-N4-E2-K4-R3", "mamba2-N8-P8-G2-K4-C4", "gru-H12-proj", "griffin-W24-M4-K4"]


# ------------------------------------------------------------------------------------------------ helpers
def make(spec_id: str, seed: int = 0):
    """(torch layer, jax module, spec, jax params copied from the torch state_dict)."""
    spec = SPECS[spec_id]
    torch_cls, module = KINDS[spec.kind]
    torch.manual_seed(seed)
    layer = torch_cls(DIM, spec)
    params = {k: jnp.asarray(v.detach().numpy()) for k, v in layer.state_dict().items()}
    return layer, module, spec, params


@functools.lru_cache(maxsize=None)
def jitted(spec_id: str) -> NS:
    """Jitted apply (with state, traced pos_offset), step (traced pos_offset) and grad of sum(y * w) (no state)."""
    spec = SPECS[spec_id]
    module = KINDS[spec.kind][1]

    def loss(p, x, w):
        y = module.apply(p, x, spec)[0]  # (B, L, D)
        return jnp.sum(y * w), y

    return NS(apply=jax.jit(lambda p, x, s, pos: module.apply(p, x, spec, s, {"pos_offset": pos})),
              step=jax.jit(lambda p, x_t, s, pos: module.step(p, x_t, spec, s, {"pos_offset": pos})),
              grad=jax.jit(jax.grad(loss, argnums=(0, 1), has_aux=True)))


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


def jax_decode(spec_id, params, x, L1):
    """Prefill x[:, :L1] from init_state, then step the rest (jitted, traced pos_offset). Returns (y, final state)."""
    fns, spec = jitted(spec_id), SPECS[spec_id]
    state = KINDS[spec.kind][1].init_state(DIM, spec, x.shape[0])
    y0, state = fns.apply(params, x[:, :L1], state, jnp.int32(0))
    ys = [y0]
    for t in range(L1, x.shape[1]):
        y_t, state = fns.step(params, x[:, t], state, jnp.int32(t))
        ys.append(y_t[:, None])
    return jnp.concatenate(ys, axis=1), state


def torch_decode(layer, x, L1):
    state = layer.init_state(x.shape[0])
    with torch.no_grad():
        y0, state = layer(x[:, :L1], state, {"pos_offset": 0})
        ys = [y0]
        for t in range(L1, x.shape[1]):
            y_t, state = layer.step(x[:, t], state, {"pos_offset": t})
            ys.append(y_t[:, None])
    return torch.cat(ys, dim=1), state


# ------------------------------------------------------------------------------------------------ layers
@pytest.mark.parametrize("spec_id", ["gru-H16", *MAIN_IDS])
def test_init_matches_torch_keys_shapes_distributions_and_state_layout(spec_id):
    """Exactly torch's keys and shapes, fp32. Fixed inits (A_log, D, norm, zero biases) equal torch's;
    random ones match torch's in mean, std and quartiles (pooled over 96 seeds / keys). init_state: torch's layout."""
    spec = SPECS[spec_id]
    torch_cls, module = KINDS[spec.kind]
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


@pytest.mark.parametrize("spec_id", MAIN_IDS)
def test_forward_and_gradients_match_torch(spec_id):
    """Stateless forward, and d(sum(y * w))/d(every parameter, x): torch autograd vs jax.grad, 1e-4 relative."""
    layer, _, _, params = make(spec_id)
    x, w = rand(BATCH, LENGTH, DIM), rand(BATCH, LENGTH, DIM, seed=2)
    tx = torch.from_numpy(x).requires_grad_(True)
    t_y, none = layer(tx)
    assert none is None
    (t_y * torch.from_numpy(w)).sum().backward()
    (g_params, g_x), j_y = jitted(spec_id).grad(params, jnp.asarray(x), jnp.asarray(w))
    close(j_y, t_y.detach().numpy())
    assert g_params.keys() == dict(layer.named_parameters()).keys()
    for name, p in layer.named_parameters():
        close(g_params[name], p.grad.numpy())
    close(g_x, tx.grad.numpy())


@pytest.mark.parametrize("spec_id,L1", [(s, n) for s in MAIN_IDS for n in (0, 3, LENGTH)] + [("griffin-W16-M2-K1", 3)],
                         ids=lambda v: f"prefill{v}" if isinstance(v, int) else v)
def test_decoding_matches_torch(spec_id, L1):
    """Jitted prefill + jitted steps (traced pos_offset) equal torch's forward output and torch's own decoding
    (outputs and final state). prefill = L is the forward with a state."""
    layer, _, _, params = make(spec_id)
    x = rand(BATCH, LENGTH, DIM)
    with torch.no_grad():
        t_full, _ = layer(torch.from_numpy(x))
    t_dec, t_state = torch_decode(layer, torch.from_numpy(x), L1)
    j_dec, j_state = jax_decode(spec_id, params, jnp.asarray(x), L1)
    close(j_dec, t_full)
    close(j_dec, t_dec)
    close_states(j_state, t_state)


@pytest.mark.parametrize("spec_id", ["mamba2-N8-P8-G2-K4-C4", "griffin-W24-M4-K4"])
def test_vmap_over_inputs_and_states(spec_id):
    """jit(vmap(apply)) over a stack of (x, state) pairs equals the jitted apply of each pair (traced pos_offset)."""
    _, module, spec, params = make(spec_id)
    xs = jnp.asarray(rand(2, BATCH, LENGTH, DIM))  # (V, B, L, D)
    states = jax.tree.map(lambda v: jnp.stack([v, v + 1]), module.init_state(DIM, spec, BATCH))
    run = lambda p, x, s, pos: module.apply(p, x, spec, s, {"pos_offset": pos})  # noqa: E731
    y_vmap, s_vmap = jax.jit(jax.vmap(run, in_axes=(None, 0, 0, None)))(params, xs, states, jnp.int32(0))
    for i in range(2):
        y_i, s_i = jitted(spec_id).apply(params, xs[i], {k: v[i] for k, v in states.items()}, jnp.int32(0))
        close(y_vmap[i], y_i, 1e-5)
        close_states({k: v[i] for k, v in s_vmap.items()}, s_i, 1e-5)


@pytest.mark.parametrize("start", [5, "state-pos"])
def test_griffin_positions_match_torch(start):
    """No reset when x starts at absolute position 5 (ctx) or at the state's token counter (no ctx)."""
    spec_id = "griffin-W24-M4-K4"
    layer, module, spec, params = make(spec_id)
    x, x2 = rand(BATCH, LENGTH, DIM), rand(BATCH, 3, DIM, seed=4)
    with torch.no_grad():
        if start == 5:
            t_y, t_state = layer(torch.from_numpy(x), layer.init_state(BATCH), {"pos_offset": 5})
        else:
            _, t_state0 = layer(torch.from_numpy(x2), layer.init_state(BATCH))
            t_y, t_state = layer(torch.from_numpy(x), t_state0)
    j_state0 = module.init_state(DIM, spec, BATCH)
    if start == 5:
        j_y, j_state = jitted(spec_id).apply(params, jnp.asarray(x), j_state0, jnp.int32(5))
    else:
        run = jax.jit(lambda p, xx, s: module.apply(p, xx, spec, s))
        _, j_state1 = run(params, jnp.asarray(x2), j_state0)
        j_y, j_state = run(params, jnp.asarray(x), j_state1)
    close(j_y, t_y)
    close_states(j_state, t_state)


def test_invalid_specs_raise():
    with pytest.raises(ValueError, match="head_dim"):
        mamba2.init(DIM, NS(state=4, expand=1, conv=4, head_dim=5, groups=1, chunk=4), key=jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="divisible by heads"):
        griffin_lru.init_state(DIM, NS(width=10, heads=4, conv=4), 1)


def test_sqrt_bound_derivative_matches_torch():
    """Clipped sqrt gradient (max 1000 at 0) equal to recurrentgemma's / torch's custom autograd."""
    v = np.array([0.0, 1e-9, 1e-4, 0.3, 2.0], np.float32)
    tv = torch.from_numpy(v).requires_grad_(True)
    _SqrtBoundDerivative.apply(tv).sum().backward()
    g = jax.grad(lambda a: jnp.sum(griffin_lru.sqrt_bound_derivative(a)))(jnp.asarray(v))
    close(g, tv.grad.numpy(), 1e-6)
    assert float(g[0]) == pytest.approx(1000.0)
