"""Pallas GPU kernels (JAX backend) against the sequential references, run through Pallas' interpreter on CPU.

``pallas_selective_scan`` and ``pallas_linear_recurrence`` must equal ``selective_scan.reference`` /
``linear_recurrence.reference`` in values (outputs and final states) and in the gradients of every input
(``jax.grad`` of the reference is the oracle for the kernels' ``custom_vjp``). Cases walk the lengths 1, 7, chunk-1,
chunk, chunk+1 and 3*chunk+5 (chunk 8), batch 1 and 3, ragged channels (D=12 with block 8), groups 1/2, every optional
input on and off, with and without an initial state, strong and weak decay; plus bf16 inputs against the fp32
reference, the inference path (no checkpoints), and the Triton lowering (cross-lowered for CUDA on this CPU).

Interpreter runs are slow and every shape compiles anew: each case builds one jitted value-and-grad function.

Glossary of dimension letters:
    B: batch    D: channels    L: sequence length    N: state size    G: groups of B/C
"""

import importlib
from types import SimpleNamespace as NS

import numpy as np
import pytest

jax = pytest.importorskip("jax")
pytest.importorskip("jax.experimental.pallas", reason="this jax has no Pallas")
import jax.numpy as jnp  # noqa: E402

from hybridc_jax.ops import OPS  # noqa: E402
from hybridc_jax.ops.linear_recurrence import pallas as plr  # noqa: E402
from hybridc_jax.ops.selective_scan import pallas as pss  # noqa: E402

# the op packages (entry point, step, reference); `from hybridc_jax.ops import ssd` gives the entry callable itself
jlr, jss = (importlib.import_module(f"hybridc_jax.ops.{op}") for op in ("linear_recurrence", "selective_scan"))

CHUNK, BLOCK, N = 8, 8, 4
SS_CASES = {  # L over 1, 7 (= chunk-1), 8, 9, 29 (= 3*chunk+5); features rotate so each is on and off somewhere
    "L1-B1-D8-G1-plain-weak": NS(L=1, B=1, D=8, G=0, z=False, D_skip=False, bias=False, softplus=False, h0=False,
                                 decay="weak"),
    "L7-B3-D12-G2-all-strong": NS(L=7, B=3, D=12, G=2, z=True, D_skip=True, bias=True, softplus=True, h0=True,
                                  decay="strong"),
    "L8-B1-D16-G2-z-h0-weak": NS(L=8, B=1, D=16, G=2, z=True, D_skip=False, bias=False, softplus=False, h0=True,
                                 decay="weak"),
    "L9-B3-D16-G1-softplus-strong": NS(L=9, B=3, D=16, G=1, z=False, D_skip=True, bias=True, softplus=True,
                                       h0=False, decay="strong"),
    "L29-B3-D12-G2-all-mixed": NS(L=29, B=3, D=12, G=2, z=True, D_skip=True, bias=True, softplus=True, h0=True,
                                  decay="mixed"),
}
SS_ARGS = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias", "initial_state")


def _rng(seed=0):
    return np.random.default_rng(seed)


def _decay_A(rng, decay: str, shape):
    """A < 0: strong |A| in [2, 8] (exp(dt A) ~ 1e-3 .. 0.1), weak in [1e-3, 1e-2], mixed spans both."""
    lo, hi = dict(strong=(2.0, 8.0), weak=(1e-3, 1e-2), mixed=(1e-3, 8.0))[decay]
    return -np.exp(rng.uniform(np.log(lo), np.log(hi), shape))


def ss_inputs(c: NS, dtype=jnp.float32, seed=0) -> dict:
    """The reference's keyword inputs for case c (absent options are None); G=0 means B, C of shape (B, N, L)."""
    rng = _rng(seed)

    def r(*shape, scale=1.0):
        return jnp.asarray(scale * rng.standard_normal(shape), dtype)

    bc_shape = (c.B, N, c.L) if c.G == 0 else (c.B, c.G, N, c.L)
    delta = r(c.B, c.D, c.L) if c.softplus else jnp.asarray(rng.uniform(0.05, 1.0, (c.B, c.D, c.L)), dtype)
    return dict(u=r(c.B, c.D, c.L), delta=delta, A=jnp.asarray(_decay_A(rng, c.decay, (c.D, N)), dtype),
                B=r(*bc_shape), C=r(*bc_shape), D=r(c.D) if c.D_skip else None, z=r(c.B, c.D, c.L) if c.z else None,
                delta_bias=r(c.D, scale=0.5) if c.bias else None,
                initial_state=r(c.B, c.D, N) if c.h0 else None)


def value_and_grads(fn, inputs: dict, softplus: bool, seed=1):
    """jit(value_and_grad) of sum(out * w) + sum(last * w2) w.r.t. every present input -> (out, last, grads)."""
    present = {k: v for k, v in inputs.items() if v is not None}
    out_shape = inputs["u"].shape
    rng = _rng(seed)
    w = jnp.asarray(rng.standard_normal(out_shape), jnp.float32)
    w2 = jnp.asarray(rng.standard_normal(out_shape[:2] + (inputs["A"].shape[1],)), jnp.float32)

    def loss(p):
        out, last = fn(**{**inputs, **p}, delta_softplus=softplus)
        return jnp.sum(out.astype(jnp.float32) * w) + jnp.sum(last * w2), (out, last)

    (_, (out, last)), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(present)
    return out, last, grads


def assert_close(actual, expected, rtol, name=""):
    """Elementwise |a - e| <= rtol * (|e| + max|e|): relative, with an absolute floor at the tensor's scale."""
    a, e = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert a.shape == e.shape, (name, a.shape, e.shape)
    scale = np.abs(e).max() if e.size else 0.0
    np.testing.assert_allclose(a, e, rtol=rtol, atol=rtol * scale + 1e-30, err_msg=name)


def _pallas_ss(**kw):
    return pss.pallas_selective_scan(**kw, block_d=BLOCK, chunk=CHUNK)


# ------------------------------------------------------------------------------------------------ selective scan
@pytest.mark.parametrize("case", SS_CASES.values(), ids=SS_CASES.keys())
def test_selective_scan_values_and_grads(case):
    inputs = ss_inputs(case)
    out, last, grads = value_and_grads(_pallas_ss, inputs, case.softplus)
    ref_out, ref_last, ref_grads = value_and_grads(jss.reference, inputs, case.softplus)
    assert out.dtype == jnp.float32 and last.dtype == jnp.float32
    assert_close(out, ref_out, 1e-4, "out")
    assert_close(last, ref_last, 1e-4, "last_state")
    assert grads.keys() == ref_grads.keys()
    for name in grads:
        assert_close(grads[name], ref_grads[name], 1e-4, f"d {name}")


def test_selective_scan_bf16_inputs_vs_fp32_reference():
    """bf16 inputs: outputs and gradients come back in bf16, close to the fp32 reference on the same values."""
    case = SS_CASES["L29-B3-D12-G2-all-mixed"]
    inputs = ss_inputs(case, jnp.bfloat16)
    out, last, grads = value_and_grads(_pallas_ss, inputs, True)
    upcast = {k: None if v is None else v.astype(jnp.float32) for k, v in inputs.items()}
    ref_out, ref_last, ref_grads = value_and_grads(jss.reference, upcast, True)
    assert out.dtype == jnp.bfloat16 and last.dtype == jnp.float32
    assert_close(out, ref_out, 3e-2, "out")
    assert_close(last, ref_last, 1e-2, "last_state")
    for name in grads:
        assert grads[name].dtype == jnp.bfloat16, name
        assert_close(grads[name], ref_grads[name], 5e-2, f"d {name}")


def test_selective_scan_inference_path_eager():
    """Called eagerly outside any transform: the forward kernel without checkpoints."""
    case = SS_CASES["L9-B3-D16-G1-softplus-strong"]
    inputs = ss_inputs(case, seed=3)
    out, last = _pallas_ss(**inputs, delta_softplus=True)
    ref_out, ref_last = jss.reference(**inputs, delta_softplus=True)
    assert_close(out, ref_out, 1e-4, "out")
    assert_close(last, ref_last, 1e-4, "last_state")


def test_selective_scan_through_entry_point():
    if "pallas" not in OPS["selective_scan"].impls:
        pytest.skip("the selective_scan Op has no 'pallas' entry yet (wired by the lead)")
    inputs = ss_inputs(SS_CASES["L7-B3-D12-G2-all-strong"])
    out, last = jss.selective_scan(**inputs, delta_softplus=True, return_last_state=True, impl="pallas")
    ref_out, ref_last = jss.reference(**inputs, delta_softplus=True)
    assert_close(out, ref_out, 1e-4, "out")
    assert_close(last, ref_last, 1e-4, "last_state")


# ------------------------------------------------------------------------------------------------ linear recurrence
LR_CASES = {
    "L1-B1-D8-h0-strong": NS(L=1, B=1, D=8, h0=True, decay="strong"),
    "L7-B3-D12-weak": NS(L=7, B=3, D=12, h0=False, decay="weak"),
    "L9-B3-D16-h0-mixed": NS(L=9, B=3, D=16, h0=True, decay="mixed"),
    "L29-B1-D12-h0-weak": NS(L=29, B=1, D=12, h0=True, decay="weak"),
}


def lr_inputs(c: NS, dtype=jnp.float32, seed=0) -> dict:
    """a in (0, 1): strong ~ U(0.05, 0.5), weak ~ U(0.95, 0.999), mixed ~ U(0.05, 0.999)."""
    rng = _rng(seed)
    lo, hi = dict(strong=(0.05, 0.5), weak=(0.95, 0.999), mixed=(0.05, 0.999))[c.decay]
    a = jnp.asarray(rng.uniform(lo, hi, (c.B, c.L, c.D)), dtype)
    x = jnp.asarray(rng.standard_normal((c.B, c.L, c.D)), dtype)
    h0 = jnp.asarray(rng.standard_normal((c.B, c.D)), dtype) if c.h0 else None
    return dict(a=a, x=x, initial_state=h0)


def lr_value_and_grads(fn, inputs: dict, seed=1):
    present = {k: v for k, v in inputs.items() if v is not None}
    rng = _rng(seed)
    w = jnp.asarray(rng.standard_normal(inputs["x"].shape), jnp.float32)
    w2 = jnp.asarray(rng.standard_normal(inputs["x"].shape[::2]), jnp.float32)

    def loss(p):
        h, last = fn(**{**inputs, **p})
        return jnp.sum(h.astype(jnp.float32) * w) + jnp.sum(last * w2), (h, last)

    (_, (h, last)), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(present)
    return h, last, grads


def _pallas_lr(**kw):
    return plr.pallas_linear_recurrence(**kw, block_d=BLOCK)


@pytest.mark.parametrize("case", LR_CASES.values(), ids=LR_CASES.keys())
def test_linear_recurrence_values_and_grads(case):
    inputs = lr_inputs(case)
    h, last, grads = lr_value_and_grads(_pallas_lr, inputs)
    ref_h, ref_last, ref_grads = lr_value_and_grads(jlr.reference, inputs)
    assert_close(h, ref_h, 1e-4, "h")
    assert_close(last, ref_last, 1e-4, "h_last")
    assert grads.keys() == ref_grads.keys()
    for name in grads:
        assert_close(grads[name], ref_grads[name], 1e-4, f"d {name}")


def test_linear_recurrence_bf16_inputs_vs_fp32_reference():
    inputs = lr_inputs(LR_CASES["L29-B1-D12-h0-weak"], jnp.bfloat16)
    h, last, grads = lr_value_and_grads(_pallas_lr, inputs)
    ref_h, ref_last, ref_grads = lr_value_and_grads(
        jlr.reference, {k: None if v is None else v.astype(jnp.float32) for k, v in inputs.items()})
    assert h.dtype == jnp.bfloat16 and last.dtype == jnp.float32
    assert_close(h, ref_h, 2e-2, "h")
    assert_close(last, ref_last, 1e-2, "h_last")
    for name in grads:
        assert grads[name].dtype == jnp.bfloat16, name
        assert_close(grads[name], ref_grads[name], 3e-2, f"d {name}")


def test_linear_recurrence_through_entry_point_eager():
    if "pallas" not in OPS["linear_recurrence"].impls:
        pytest.skip("the linear_recurrence Op has no 'pallas' entry yet (wired by the lead)")
    inputs = lr_inputs(LR_CASES["L9-B3-D16-h0-mixed"])
    h, last = jlr.linear_recurrence(**inputs, impl="pallas")
    ref_h, ref_last = jlr.reference(**inputs)
    assert_close(h, ref_h, 1e-4, "h")
    assert_close(last, ref_last, 1e-4, "h_last")


# ------------------------------------------------------------------------------------------------ lowering
def test_lowering_available_on_cpu_means_interpreter():
    assert jax.default_backend() != "cpu" or (pss.lowering_available() and plr.lowering_available())


def test_gpu_lowering_emits_triton_kernels():
    """Cross-lower (no GPU needed) value and grad for CUDA: every kernel must pass Pallas' Triton lowering
    (power-of-two tensors, supported primitives) and become a Triton custom call: 2 per op (forward, backward)."""
    u = jnp.ones((1, 12, 5), jnp.bfloat16)
    A, BC, a = -jnp.ones((12, 3), jnp.float32), jnp.ones((1, 2, 3, 5), jnp.bfloat16), jnp.ones((1, 5, 12))

    def loss(u, A, BC, a):
        out, last = pss.pallas_selective_scan(u, u, A, BC, BC, D=A[:, 0], z=u, delta_bias=A[:, 1],
                                              delta_softplus=True, interpret=False, block_d=4, chunk=2)
        h, h_last = plr.pallas_linear_recurrence(a, a, interpret=False, block_d=8)
        return out.astype(jnp.float32).sum() + last.sum() + h.sum() + h_last.sum()

    traced = jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3))).trace(u, A, BC, a)
    text = traced.lower(lowering_platforms=("cuda",)).as_text()
    assert text.count("xla.gpu.triton") == 4


def test_block_d_must_be_a_power_of_two():
    inputs = ss_inputs(SS_CASES["L1-B1-D8-G1-plain-weak"])
    with pytest.raises(ValueError, match="power of two"):
        pss.pallas_selective_scan(**inputs, block_d=6)
    with pytest.raises(ValueError, match="power of two"):
        plr.pallas_linear_recurrence(**lr_inputs(LR_CASES["L1-B1-D8-h0-strong"]), block_d=12)
