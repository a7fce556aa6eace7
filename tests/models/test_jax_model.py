"""The JAX backend against the torch backend, every kind, preset and feature: the same weights give the same outputs,
gradients and decoding; weights move both ways through one safetensors file; the emitter round-trips."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402

import hybridc  # noqa: E402
from programs import PROGRAMS, source  # noqa: E402

L = 11


def pair(name, sequence=True):
    m = hybridc.load(source(name, sequence=sequence))
    torch.manual_seed(0)
    tn = hybridc.build(m).eval()
    jn = hybridc.build(m, backend="jax")
    params = {k: jnp.asarray(v.detach().numpy()) for k, v in tn.named_parameters()}
    return m, tn, jn, params


def inputs(m, b=2, length=L, seed=1):
    rng = np.random.default_rng(seed)
    if m.vocab is not None:
        return rng.integers(0, m.vocab, (b, length))
    return rng.standard_normal((b, length, m.input)).astype(np.float32)


def to_torch(x):
    return torch.from_numpy(np.asarray(x))


@pytest.mark.parametrize("name", PROGRAMS)
def test_values_and_gradients_match_torch(name, tmp_path):
    m, tn, jn, params = pair(name)
    x = inputs(m)
    w = np.random.default_rng(2).standard_normal(tn(to_torch(x)).shape).astype(np.float32)
    yt = tn(to_torch(x))
    (yt * to_torch(w)).sum().backward()
    def loss(p):
        y = jn.apply(p, jnp.asarray(x))
        return (y * w).sum(), y

    value_and_grad = jax.jit(jax.value_and_grad(loss, has_aux=True))  # one compile for both
    (_, yj), grads = value_and_grad(params)
    np.testing.assert_allclose(np.asarray(yj), yt.detach().numpy(), atol=1e-4, rtol=1e-4)
    # the other way round: JAX-side weights through a safetensors file into a fresh torch model
    rng = np.random.default_rng(5)
    pj = {k: np.asarray(v) + 0.01 * rng.standard_normal(v.shape).astype(np.float32) for k, v in params.items()}
    hybridc.save_weights(pj, tmp_path / "w.safetensors")
    torch.manual_seed(7)
    tn2 = hybridc.load_weights(hybridc.build(m).eval(), tmp_path / "w.safetensors")
    (_, yj2), _ = value_and_grad({k: jnp.asarray(v) for k, v in pj.items()})
    with torch.no_grad():
        np.testing.assert_allclose(tn2(to_torch(x)).numpy(), np.asarray(yj2), atol=1e-4, rtol=1e-4)
    for k, p in tn.named_parameters():
        gt, gj = p.grad.numpy(), np.asarray(grads[k])
        scale = max(np.abs(gt).max(), 1e-6)
        assert np.abs(gt - gj).max() <= 1e-4 * scale + 1e-6, k


@pytest.mark.parametrize("name", PROGRAMS)
def test_decoding_matches_torch(name):
    m, tn, jn, params = pair(name)
    x = inputs(m)
    with torch.no_grad():
        full = tn(to_torch(x)).numpy()
    state = jn.init_state(2, max_len=L + m.meta_tokens)
    y, state = jax.jit(lambda p, xx, st: jn.apply(p, xx, st, start=True))(params, jnp.asarray(x[:, :4]), state)
    ys = [np.asarray(y)]
    step = jax.jit(jn.step)
    for t in range(4, L):
        y, state = step(params, jnp.asarray(x[:, t]), state)
        ys.append(np.asarray(y)[:, None])
    np.testing.assert_allclose(np.concatenate(ys, 1), full, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", PROGRAMS)
def test_init_names_shapes_and_count(name):
    m, tn, jn, _ = pair(name)
    p = jax.eval_shape(jn.init, jax.random.PRNGKey(0))
    named = dict(tn.named_parameters())
    assert set(p) == set(named)
    assert all(tuple(p[k].shape) == tuple(v.shape) for k, v in named.items())
    assert sum(int(v.size) for v in p.values()) == hybridc.describe(m)["params"]


@pytest.mark.parametrize("name", ["preset-hymba", "feat-vocab_logits", "preset-zamba", "feat-rwkv_chain"])
def test_weights_round_trip_both_ways(name, tmp_path):
    m, tn, jn, _ = pair(name)
    x = inputs(m)
    f = tmp_path / "w.safetensors"
    hybridc.save_weights(tn, f)                           # torch -> file -> jax
    fwd = jax.jit(jn.apply)
    yj = fwd(hybridc.load_weights(jn, f), jnp.asarray(x))
    with torch.no_grad():
        np.testing.assert_allclose(np.asarray(yj), tn(to_torch(x)).numpy(), atol=1e-4, rtol=1e-4)
    pj = jax.jit(jn.init)(jax.random.PRNGKey(3))          # jax -> file -> torch
    hybridc.save_weights(pj, f)
    torch.manual_seed(1)
    tn2 = hybridc.load_weights(hybridc.build(m).eval(), f)
    with torch.no_grad():
        np.testing.assert_allclose(tn2(to_torch(x)).numpy(), np.asarray(fwd(pj, jnp.asarray(x))), atol=1e-4, rtol=1e-4)


def test_load_weights_rejects_a_mismatch(tmp_path):
    _, tn, _, _ = pair("kind-mamba")
    f = tmp_path / "w.safetensors"
    hybridc.save_weights(tn, f)
    _, other, jn, _ = pair("kind-gru")
    with pytest.raises(hybridc.HybridcError):
        hybridc.load_weights(other, f)
    with pytest.raises(hybridc.HybridcError):
        hybridc.load_weights(jn, f)


@pytest.mark.parametrize("name", ["kind-mamba", "feat-meta"])
def test_jit_grad_vmap_and_causality(name):
    m, _, jn, params = pair(name)
    x = jnp.asarray(inputs(m))
    fwd = jax.jit(jn.apply)
    y = fwd(params, x)
    per_example = jax.vmap(lambda xi: jn.apply(params, xi[None])[0])(x)
    np.testing.assert_allclose(np.asarray(per_example), np.asarray(y), atol=1e-5, rtol=1e-5)
    g = jax.jit(jax.grad(lambda p: jn.apply(p, x).sum()))(params)
    assert all(bool(jnp.isfinite(v).all()) for v in g.values())
    x2 = x.at[:, 6:].add(1.0)
    y2 = fwd(params, x2)
    np.testing.assert_array_equal(np.asarray(y2[:, :6]), np.asarray(y[:, :6]))


def test_dropout_needs_train_and_key():
    m = hybridc.load(source("kind-mamba", dropout=0.5, sequence=True))
    jn = hybridc.build(m, backend="jax")
    p = jn.init(jax.random.PRNGKey(0))
    x = jnp.asarray(inputs(m))
    assert jnp.array_equal(jn.apply(p, x), jn.apply(p, x, key=jax.random.PRNGKey(1)))
    assert not jnp.array_equal(jn.apply(p, x), jn.apply(p, x, key=jax.random.PRNGKey(1), train=True))


@pytest.mark.parametrize("name", ["preset-hymba", "preset-zamba", "feat-rwkv_chain"])
def test_emitter_round_trip(name, tmp_path):
    import importlib.util

    from hybridc_jax.emit import emit

    m, _, jn, params = pair(name)
    path = tmp_path / "emitted_jax.py"
    path.write_text(emit(m))
    spec = importlib.util.spec_from_file_location("emitted_jax", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert "import hybridc\n" not in path.read_text() and "import torch" not in path.read_text()
    assert set(mod.init(jax.random.PRNGKey(0))) == set(params)
    x = jnp.asarray(inputs(m))
    np.testing.assert_array_equal(np.asarray(mod.apply(params, x)), np.asarray(jn.apply(params, x)))
