"""How the JAX op tests compare an implementation with its reference (shared by the tests/ops/test_<op>.py files).

    compare_fast         a fast form (chunk, scan_chunk, cpp) against the lax.scan reference: one jitted forward and
                         `jax.grad` of a fixed random linear functional of (output, final state) per implementation
    jax_fn, torch_fast   the six ops behind one calling convention, and torch's CPU fast form on the same inputs
    close_fast           rtol plus an atol scaled by the reference's magnitude
    close_parity         JAX reference against torch's reference: relative to the scale of the torch value
    close_pallas         |a - e| <= rtol * (|e| + max|e|)
Markers: needs_jax_cpp (the C++ kernels as XLA custom calls build), needs_pallas (this jax has Pallas).

Dimension glossary: B batch, L sequence length, D channels, N state size, H heads, K key / V value head dim.
"""
from __future__ import annotations

import functools
import importlib
import importlib.util

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from hybridc_jax.ops import _ffi_library, delta_rule, gated_delta_rule, linear_recurrence, rwkv7, ssd
from hybridc_jax.ops.selective_scan import chunk as jss_chunk
from hybridc_jax.ops.selective_scan import cpp as jss_cpp
from hybridc_jax.ops.selective_scan import naive as jss_naive
from ops._inputs import B, H, K, V, parity_delta_inputs

# the torch op packages (entry point, step); `from hybridc_torch.ops import ssd` gives the entry callable itself
tdr, tgdr, tlr, trk, tss, tssd = (importlib.import_module(f"hybridc_torch.ops.{op}") for op in (
    "delta_rule", "gated_delta_rule", "linear_recurrence", "rwkv7", "selective_scan", "ssd"))

JAX_CPP = _ffi_library.available()
needs_jax_cpp = pytest.mark.skipif(not JAX_CPP, reason="no C++ toolchain for the CPU kernels")
HAS_PALLAS = importlib.util.find_spec("jax.experimental.pallas") is not None
needs_pallas = pytest.mark.skipif(not HAS_PALLAS, reason="this jax has no Pallas")


def pallas_module(op: str):
    """hybridc_jax.ops.<op>.pallas, or None without Pallas (its tests carry `needs_pallas`)."""
    return importlib.import_module(f"hybridc_jax.ops.{op}.pallas") if HAS_PALLAS else None


# ------------------------------------------------------------------------------------ fast forms (all ops)
T = 8  # the fast forms' chunk (and the C++ selective scan's checkpoint interval) in these tests
# Every length class, batch 1 and 3, with and without h0, weak and strong decay (not the full cross product:
# each case compiles two gradients). (length, batch, h0, strong)
CASES = [(1, 1, False, False), (T - 1, 3, True, True), (T, 1, True, False), (T + 1, 3, False, True),
         (3 * T + 5, 3, True, False)]
LIGHT_CASES = CASES[::2]  # no decay / a cheap kernel: fewer cases


def case_id(case) -> str:
    length, batch, h0, strong = case
    return f"L{length}-B{batch}-{'h0' if h0 else 'zero'}-{'strong' if strong else 'weak'}"


def jax_fn(kernel, impl, chunk=T):
    """Callable(**inputs) -> (out, final state) through the public JAX entry point."""
    chunked = impl != "reference"

    def fn(**kw):
        if kernel == "selective_scan" and impl == "cpp":  # `chunk`: the C++ kernel's checkpoint interval
            return jss_cpp.selective_scan_cpp(**kw, delta_softplus=True, checkpoint_every=chunk)
        if kernel == "selective_scan":
            f = functools.partial(jss_chunk.chunk_selective_scan, chunk_size=chunk) if chunked else jss_naive.reference
            return f(**kw, delta_softplus=True)
        if kernel == "ssd":
            return ssd(**kw, chunk_size=chunk, dt_softplus=True, return_final_states=True, impl=impl)
        if kernel == "linear_recurrence":
            return linear_recurrence(**kw, impl=impl, chunk_size=chunk if chunked else None)
        mod = {"delta_rule": delta_rule, "gated_delta_rule": gated_delta_rule, "rwkv7": rwkv7}[kernel]
        return mod(**kw, output_final_state=True, impl=impl, chunk_size=chunk if chunked else None)  # None: default
    return fn


def torch_fast(kernel, kw):
    """The torch kernel with impl="auto" (its CPU fast form) on the same inputs: (out, final) as numpy."""
    t = {k: None if v is None else torch.from_numpy(np.array(v)) for k, v in kw.items()}
    if kernel == "selective_scan":
        out = tss.selective_scan(**{k: v for k, v in t.items() if k != "initial_state"}, delta_softplus=True,
                                 return_last_state=True, initial_state=t["initial_state"])
    elif kernel == "ssd":
        out = tssd.ssd(**t, chunk_size=T, dt_softplus=True, return_final_states=True)
    elif kernel == "linear_recurrence":
        out = tlr.linear_recurrence(**t)
    else:
        fn = {"delta_rule": tdr.delta_rule, "gated_delta_rule": tgdr.gated_delta_rule, "rwkv7": trk.rwkv7}[kernel]
        out = fn(**t, output_final_state=True)
    return [o.detach().numpy() for o in out]


@functools.lru_cache(maxsize=None)
def value_and_grads(kernel, impl, chunk=T):
    """Jitted (out, final), d/d(every input) of sum(out * w_out) + sum(final * w_final) for fixed random w."""
    fn = jax_fn(kernel, impl, chunk)

    def loss(kw):
        out, final = fn(**kw)
        w_out = jnp.cos(jnp.arange(out.size, dtype=jnp.float32).reshape(out.shape))
        w_fin = jnp.sin(jnp.arange(final.size, dtype=jnp.float32).reshape(final.shape))
        return jnp.sum(out * w_out) + jnp.sum(final * w_fin), (out, final)

    return jax.jit(jax.value_and_grad(loss, has_aux=True))


def close_fast(actual, expected, rtol=1e-4, atol=1e-5, what=""):
    """rtol plus an absolute tolerance scaled by the reference's magnitude (sums of many fp32 terms)."""
    expected = np.asarray(expected)
    scale = max(1.0, float(np.abs(expected).max())) if expected.size else 1.0
    np.testing.assert_allclose(np.asarray(actual), expected, rtol=rtol, atol=atol * scale, err_msg=what)


def compare_fast(kernel, kw, chunk=T, impl="chunk"):
    """Fast (`impl`) vs reference: outputs, final state and the gradient of every input."""
    kw = {k: jnp.asarray(v) for k, v in kw.items() if v is not None}
    (_, (out_r, fin_r)), g_r = value_and_grads(kernel, "reference")(kw)
    (_, (out_f, fin_f)), g_f = value_and_grads(kernel, impl, chunk)(kw)
    assert out_f.shape == out_r.shape and out_f.dtype == out_r.dtype and fin_f.shape == fin_r.shape
    close_fast(out_f, out_r, what="out")
    close_fast(fin_f, fin_r, what="final state")
    for name in kw:
        close_fast(g_f[name], g_r[name], what=f"grad {name}")


def cpp_matches_torch_and_runs_under_vmap(kernel, kw):
    """The C++ custom call against torch's impl="cpp" on `kw`, and under vmap (the mapped axis looped)."""
    jkw = {k: jnp.asarray(v) for k, v in kw.items() if v is not None}
    out, final = jax.jit(lambda kw: jax_fn(kernel, "cpp", T)(**kw))(jkw)
    t_out, t_final = torch_fast(kernel, kw)
    close_fast(out, t_out, rtol=1e-5, what="out")
    close_fast(final, t_final, rtol=1e-5, what="final state")
    stacked = {k: jnp.stack([v, 0.5 * v]) for k, v in jkw.items()}
    v_out, v_final = jax.jit(jax.vmap(lambda kw: jax_fn(kernel, "cpp", T)(**kw)))(stacked)
    r_out, r_final = jax_fn(kernel, "reference")(**{k: 0.5 * v for k, v in jkw.items()})
    close_fast(v_out[0], out)
    close_fast(v_out[1], r_out)
    close_fast(v_final[1], r_final)


def chunk_matches_torch_fast(kernel, kw):
    """The JAX chunked form against the torch kernel's CPU fast form (impl="auto" there) on the same inputs."""
    out, final = jax.jit(lambda kw: jax_fn(kernel, "chunk", T)(**kw))(
        {k: jnp.asarray(v) for k, v in kw.items() if v is not None})
    t_out, t_final = torch_fast(kernel, kw)
    close_fast(out, t_out, what="out")
    close_fast(final, t_final, what="final state")


def long_sequence_stays_finite(kernel, kw, chunk):
    """16k steps through the auto implementation at `chunk` (None: its default)."""
    kw = {k: jnp.asarray(v) for k, v in kw.items()}
    out, final = jax.jit(lambda kw: jax_fn(kernel, "auto", chunk)(**kw))(kw)
    assert bool(jnp.all(jnp.isfinite(out))) and bool(jnp.all(jnp.isfinite(final)))
    return kw


def bf16_inputs_keep_their_dtype(kernel, kw):
    kw = {k: jnp.asarray(v) for k, v in kw.items() if v is not None}
    out, final = jax.jit(lambda kw: jax_fn(kernel, "chunk", 4)(**kw))(
        {k: v.astype(jnp.bfloat16) for k, v in kw.items()})
    out_r, _ = jax.jit(lambda kw: jax_fn(kernel, "reference")(**kw))(kw)
    assert out.dtype == jnp.bfloat16 and final.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(out, np.float32), np.asarray(out_r), rtol=5e-2, atol=5e-2)


def auto_and_reference_picks(op, auto, reference):
    assert op.pick("auto", jax.default_backend()) is auto
    assert op.pick("reference", jax.default_backend()) is reference
    with pytest.raises(ValueError, match="valid choices"):
        op.pick("nope", jax.default_backend())


# ------------------------------------------------------------------------------ JAX reference vs torch's
def close_parity(a, b, tol=1e-4):
    """Values equal to `tol`, relative to the scale of `b` (elementwise rtol plus an atol of tol * max|b|)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol * max(np.abs(b).max(initial=0.0), 1e-6))


def _close_delta(a, b, **tol):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), **tol)


def delta_matches_torch_reference(tmod, jmod, entry, names, kw, T, init):
    """The delta family's JAX reference (jitted) against torch's on parity_delta_inputs(T): output and final state."""
    x = parity_delta_inputs(T)
    h0 = x["h0"] if init else None
    o_t, S_t = getattr(tmod, entry)(*(x[n] for n in names), initial_state=h0, output_final_state=True, **kw)
    fn = jax.jit(functools.partial(getattr(jmod, entry), output_final_state=True, impl="reference", **kw))
    o, S = fn(*(jnp.asarray(x[n].numpy()) for n in names), initial_state=None if h0 is None else jnp.asarray(h0))
    assert o.shape == (B, T, H, V) and S.shape == (B, H, K, V) and S.dtype == jnp.float32
    _close_delta(o, o_t, atol=1e-5, rtol=1e-5)
    _close_delta(S, S_t, atol=1e-5, rtol=1e-5)


def delta_step_matches_torch_step_and_edge_cases(tmod, jmod, entry, names, kw):
    """The JAX step against torch's; an empty sequence passes the state through; no state unless asked; bad impl."""
    x = parity_delta_inputs(1, seed=3)
    args_t = [x[n][:, 0] for n in names]
    o_t, S_t = getattr(tmod, f"{entry}_step")(*args_t, x["h0"], **kw)
    o, S = jax.jit(functools.partial(getattr(jmod, f"{entry}_step"), **kw))(*(jnp.asarray(a.numpy()) for a in args_t),
                                                                             jnp.asarray(x["h0"].numpy()))
    _close_delta(o, o_t, atol=1e-5, rtol=1e-5)
    _close_delta(S, S_t, atol=1e-5, rtol=1e-5)
    empty = [jnp.asarray(t[:, :0].numpy()) for t in (x[n] for n in names)]
    o0, S0 = getattr(jmod, entry)(*empty, initial_state=jnp.asarray(x["h0"].numpy()), output_final_state=True, **kw)
    assert o0.shape == (B, 0, H, V)
    _close_delta(S0, x["h0"], atol=0, rtol=0)
    assert getattr(jmod, entry)(*empty, **kw)[1] is None
    with pytest.raises(ValueError, match="valid choices: 'auto', 'reference'"):
        getattr(jmod, entry)(*empty, impl="triton")


# ---------------------------------------------------------------------------------------------- Pallas
def close_pallas(actual, expected, rtol, name=""):
    """Elementwise |a - e| <= rtol * (|e| + max|e|): relative, with an absolute floor at the tensor's scale."""
    a, e = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert a.shape == e.shape, (name, a.shape, e.shape)
    scale = np.abs(e).max() if e.size else 0.0
    np.testing.assert_allclose(a, e, rtol=rtol, atol=rtol * scale + 1e-30, err_msg=name)
