"""How the torch op tests compare an implementation with its reference (shared by the tests/ops/test_<op>.py files).

    close_scaled         rtol plus an atol scaled by the reference's magnitude (fp32 sums of many terms)
    compare              SSM kernels (cpp, chunk, triton): outputs, then the gradient of every floating input
                         for a fixed float64 random functional of all outputs, at the outputs' tolerance
    compare_10x_grads    Triton delta rule / SSD: a float32 random functional, gradients to 10x the atol
    delta_run, delta_check
                         delta family (chunk, cpp) called positionally: outputs, final state, every gradient
    delta_*, impl_dispatch, split_sequences_chain_through_state
                         the bodies of delta-family tests that each op's file runs for its op
    fla_run, fla_grads   the delta family against fla's naive forms
    decay_matrix         the closed forms' causal decay products
Markers: needs_torch_cpp (the C++ CPU kernels build), needs_triton (triton is installed: its kernels run through the
interpreter on CPU, conftest.py sets TRITON_INTERPRET=1), needs_fla (flash-linear-attention is installed).

Dimension glossary: B batch, L / T sequence length, H heads, K key / V value head dim, P head dim, N state size.
"""
from __future__ import annotations

import importlib
import importlib.util
import math
import os
import warnings

import pytest
import torch

from hybridc_torch.ops import _cpp_library, delta_rule, gated_delta_rule, rwkv7, ssd
from ops._inputs import FAST_H, FAST_V, K, delta_inputs, fla_inputs, triton_gdr_inputs

TORCH_CPP = _cpp_library.available()
needs_torch_cpp = pytest.mark.skipif(not TORCH_CPP, reason="no C++ toolchain for the CPU kernels")
HAS_TRITON = importlib.util.find_spec("triton") is not None
needs_triton = pytest.mark.skipif(not HAS_TRITON, reason="the Triton kernels need triton")
# the Triton kernels' tests run on CUDA tensors when a GPU run asks for it (TRITON_INTERPRET=0), else on CPU
TRITON_DEVICE = "cuda" if os.environ.get("TRITON_INTERPRET") == "0" and torch.cuda.is_available() else "cpu"


def triton_module(op: str):
    """hybridc_torch.ops.<op>.triton, or None without triton (its tests carry `needs_triton`)."""
    return importlib.import_module(f"hybridc_torch.ops.{op}.triton") if HAS_TRITON else None


def fla_module(name: str):
    """fla's naive module `name` (plain torch, runs on CPU), or None without fla (its tests carry `needs_fla`)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return importlib.import_module(name)
        except ImportError:
            return None


HAS_FLA = importlib.util.find_spec("fla") is not None
needs_fla = pytest.mark.skipif(not HAS_FLA, reason="fla (flash-linear-attention) is not installed")


def close_scaled(actual, expected, rtol=1e-4, atol=1e-5, what=""):
    """rtol plus an absolute tolerance scaled by the reference's magnitude (sums of many fp32 terms)."""
    scale = max(1.0, expected.abs().max().item()) if expected.numel() else 1.0
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol * scale, msg=lambda m: f"{what}: {m}")


def decay_matrix(log_a: torch.Tensor) -> torch.Tensor:
    """log_a (..., L) -> M (..., L, L) with M[t, s] = exp(sum_{s<r<=t} log_a_r) for s <= t, else 0."""
    cs = torch.cumsum(log_a, dim=-1)  # (..., L)
    diff = cs[..., :, None] - cs[..., None, :]  # (..., L, L)
    causal = torch.ones(diff.shape[-2:], dtype=torch.bool, device=diff.device).tril()
    return torch.where(causal, diff, torch.full_like(diff, -torch.inf)).exp()


# ------------------------------------------------------------------------ SSM kernels (cpp, chunk, triton)
def _loss(outputs):
    """A fixed random linear functional of all outputs (so every output element gets a distinct cotangent)."""
    g = torch.Generator().manual_seed(1234)
    return sum((o.double() * torch.randn(o.shape, generator=g, dtype=torch.float64).to(o.device)).sum()
               for o in outputs)


def run_and_grad(fn, inputs):
    """fn(**leaves) on fresh leaf copies of `inputs` (a dict, None entries allowed; floating ones require grad).
    Returns (outputs, {name: grad}); no gradients when an output is empty."""
    leaves = {k: (None if v is None else v.detach().clone().requires_grad_(v.is_floating_point()))
              for k, v in inputs.items()}
    outs = fn(**leaves)
    outs = outs if isinstance(outs, tuple) else (outs,)
    grads = {}
    if all(o.numel() for o in outs):
        wrt = {k: v for k, v in leaves.items() if v is not None and v.requires_grad}
        gs = torch.autograd.grad(_loss(outs), list(wrt.values()), allow_unused=True)
        grads = dict(zip(wrt, gs))
    return outs, grads


def compare(fn_ref, fn_fast, inputs, n_outputs=2, rtol=1e-4, atol=1e-5):
    """Outputs (dtype, shape, values) and the gradient of every input (dtype, values) of fn_fast against fn_ref."""
    (ref_outs, ref_grads), (outs, grads) = run_and_grad(fn_ref, inputs), run_and_grad(fn_fast, inputs)
    assert len(outs) == len(ref_outs) == n_outputs
    for o, r in zip(outs, ref_outs):
        assert o.dtype == r.dtype and o.shape == r.shape
        close_scaled(o, r, rtol, atol)
    for k, r in ref_grads.items():
        assert grads[k] is not None and grads[k].dtype == inputs[k].dtype, k
        close_scaled(grads[k], r, rtol, atol)


# ------------------------------------------------------------------------ Triton delta rule and SSD kernels
TRITON_CHUNK = 8
TRITON_LENGTHS = [1, TRITON_CHUNK - 1, TRITON_CHUNK, TRITON_CHUNK + 1, 3 * TRITON_CHUNK + 5]
# (batch, initial state, strong decay): every pair of factor values appears at every length
TRITON_CASES = [(1, False, False), (1, True, True), (3, False, True), (3, True, False)]
TRITON_CASE_IDS = ["B1-zero-weak", "B1-init-strong", "B3-zero-strong", "B3-init-weak"]


def run_and_grad_f32(fn, inputs: dict, seed=1, device="cpu"):
    """fn(**fresh leaf copies on `device`) -> (outputs, {name: grad}) on the CPU, for a random projection of every
    output (the projection drawn on the CPU, so every device sees the same one)."""
    leaves = {n: None if x is None else x.detach().to(device, copy=True).requires_grad_(x.is_floating_point())
              for n, x in inputs.items()}
    outs = fn(**leaves)
    gen = torch.Generator().manual_seed(seed)
    loss = sum((o.float() * torch.randn(o.shape, generator=gen).to(o.device)).sum() for o in outs)
    wrt = {n: x for n, x in leaves.items() if x is not None and x.requires_grad}
    grads = torch.autograd.grad(loss, list(wrt.values()), allow_unused=True)
    return ([o.detach().cpu() for o in outs],
            {n: None if g is None else g.cpu() for n, g in zip(wrt, grads)})


def compare_10x_grads(fn_ref, fn_fast, inputs, rtol=1e-4, atol=1e-5, device=TRITON_DEVICE):
    """Outputs (dtype, shape, values) and the gradient of every input of fn_fast (run on `device`: the Triton
    kernels' device, CUDA under TRITON_INTERPRET=0) against fn_ref on the CPU (grads: 10x atol)."""
    (outs_r, grads_r), (outs_f, grads_f) = (run_and_grad_f32(fn_ref, inputs),
                                            run_and_grad_f32(fn_fast, inputs, device=device))
    for i, (o_f, o_r) in enumerate(zip(outs_f, outs_r)):
        assert o_f.dtype == o_r.dtype and o_f.shape == o_r.shape
        close_scaled(o_f, o_r, rtol, atol, f"output {i}")
    assert grads_f.keys() == grads_r.keys()
    for name, g_r in grads_r.items():
        g_f = grads_f[name]
        if g_r is None:
            assert g_f is None or not g_f.any(), name
        else:
            close_scaled(g_f, g_r, rtol, 10 * atol, f"grad of {name}")


def ssd_fn(impl, chunk_size):
    """ssd(**kw) -> (y, final states); dt_softplus positional first (the Triton SSD tests' calling convention)."""
    def fn(dt_softplus=False, **kw):
        return ssd(**kw, chunk_size=chunk_size, dt_softplus=dt_softplus, return_final_states=True, impl=impl)
    return fn


# --------------------------------------------------------------------------- delta family (chunk and cpp)
def delta_entry(kernel):
    return {"delta_rule": delta_rule, "gated_delta_rule": gated_delta_rule, "rwkv7": rwkv7}[kernel]


def delta_run(kernel, args, h0, impl, chunk_size=None, grads=True, seed=1):
    """Forward (+ backward of a random projection of o and the final state); returns (o, S, [grads])."""
    args = [a.detach().clone().requires_grad_(grads) for a in args]
    h0 = None if h0 is None else h0.detach().clone().requires_grad_(grads)
    o, S = delta_entry(kernel)(*args, initial_state=h0, output_final_state=True, impl=impl, chunk_size=chunk_size)
    if not grads:
        return o.detach(), S.detach(), []
    gen = torch.Generator().manual_seed(seed)
    loss = (o * torch.randn(o.shape, generator=gen, dtype=o.dtype)).sum()
    loss = loss + (S * torch.randn(S.shape, generator=gen, dtype=S.dtype)).sum()
    loss.backward()
    leaves = args + ([] if h0 is None else [h0])
    return o.detach(), S.detach(), [t.grad for t in leaves]


def delta_check(kernel, args, h0, chunk_size, rtol=1e-4, atol=1e-5, impl="chunk"):
    """impl against the reference: output, final state and the gradient of every input (grads: 10x atol)."""
    o_r, S_r, g_r = delta_run(kernel, args, h0, "reference")
    o_c, S_c, g_c = delta_run(kernel, args, h0, impl, chunk_size)
    assert o_c.shape == o_r.shape and o_c.dtype == o_r.dtype and o_c.is_contiguous()
    assert S_c.shape == S_r.shape and S_c.dtype == S_r.dtype
    close_scaled(o_c, o_r, rtol, atol, "output")
    close_scaled(S_c, S_r, rtol, atol, "final state")
    for i, (gc, gr) in enumerate(zip(g_c, g_r)):
        close_scaled(gc, gr, rtol, 10 * atol, f"grad of input {i}")


def delta_auto_on_cpu(kernel, naive, monkeypatch):
    """auto: the C++ kernel for the delta rules (when it builds), the chunked form for RWKV-7; chunk_size passes."""
    from hybridc_torch.ops import OPS

    op = OPS[kernel]
    device = torch.zeros(1, 1, 1, 1).device.type
    auto = "cpp" if kernel in ("delta_rule", "gated_delta_rule") and TORCH_CPP else "chunk"
    assert op.pick("auto", device) is op.get(auto)
    assert op.pick("reference", device) is naive.reference
    with pytest.raises(ValueError, match="'chunk'"):
        op.pick("nope", device)
    seen = []
    monkeypatch.setitem(op._loaded, auto, lambda *a, **kw: seen.append(kw) or (None, None))   # what the entry runs
    args, h0 = delta_inputs(kernel, 1, 3, strong=False)
    delta_entry(kernel)(*args, chunk_size=5)
    assert seen and seen[-1]["chunk_size"] == 5
    delta_entry(kernel)(*args)
    assert "chunk_size" not in seen[-1]
    delta_entry(kernel)(*args, impl="reference", chunk_size=5)   # the reference ignores chunk_size


def delta_empty_sequence_and_no_state(kernel):
    args, h0 = delta_inputs(kernel, 2, 0, strong=False)
    o, S = delta_entry(kernel)(*args, initial_state=h0, output_final_state=True, impl="chunk")
    assert o.shape == (2, 0, FAST_H, FAST_V)
    torch.testing.assert_close(S, h0)
    args, _ = delta_inputs(kernel, 2, 5, strong=False)
    o, S = delta_entry(kernel)(*args, impl="chunk")
    assert S is None and o.shape == (2, 5, FAST_H, FAST_V)


def delta_dtypes(kernel, dtype):
    """Outputs in the input dtype, final state in the accumulation dtype (fp32, or fp64 for fp64)."""
    args, h0 = delta_inputs(kernel, 2, 19, strong=False, dtype=dtype)
    o_r, S_r = delta_entry(kernel)(*args, initial_state=h0, output_final_state=True, impl="reference")
    o_c, S_c = delta_entry(kernel)(*args, initial_state=h0, output_final_state=True, impl="chunk", chunk_size=8)
    assert o_c.dtype == o_r.dtype == dtype and S_c.dtype == S_r.dtype
    tol = dict(rtol=2e-2, atol=2e-2) if dtype == torch.bfloat16 else dict(rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(o_c, o_r, **tol)
    torch.testing.assert_close(S_c, S_r, **tol)


def delta_long_sequence_stays_finite(kernel):
    """16k steps at tiny width: chunked output and state finite and bounded (no decay-product underflow)."""
    T = 16384
    args, h0 = delta_inputs(kernel, 1, T, strong=False, h=1, k_dim=4, v_dim=4)
    o, S = delta_entry(kernel)(*args, initial_state=h0, output_final_state=True)     # auto: the chunked form on CPU
    assert torch.isfinite(o).all() and torch.isfinite(S).all()
    assert float(o.abs().max()) < 1e3 and float(S.abs().max()) < 1e3
    # the tail agrees with the reference started from the chunked state just before it
    cut = T - 50
    _, S_cut = delta_entry(kernel)(*(a[:, :cut] for a in args), initial_state=h0, output_final_state=True)
    tail = tuple(a[:, cut:] for a in args)
    o_ref, S_ref = delta_entry(kernel)(*tail, initial_state=S_cut, output_final_state=True, impl="reference")
    close_scaled(o[:, cut:], o_ref, what="tail output")
    close_scaled(S, S_ref, what="final state")
    assert math.isfinite(float(S.norm()))


def delta_cpp_fp64_empty_and_fallback(kernel, monkeypatch):
    from hybridc_torch.ops import OPS

    args, h0 = delta_inputs(kernel, 2, 19, strong=False, dtype=torch.float64)
    o_r, S_r, g_r = delta_run(kernel, args, h0, "reference")
    o_c, S_c, g_c = delta_run(kernel, args, h0, "cpp")
    assert o_c.dtype == S_c.dtype == torch.float64
    torch.testing.assert_close(o_c, o_r, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(S_c, S_r, rtol=1e-10, atol=1e-10)
    for gc, gr in zip(g_c, g_r):
        torch.testing.assert_close(gc, gr, rtol=1e-9, atol=1e-9)
    args, h0 = delta_inputs(kernel, 2, 0, strong=False)
    o, S = delta_entry(kernel)(*args, initial_state=h0, output_final_state=True, impl="cpp")
    assert o.shape == (2, 0, FAST_H, FAST_V)
    torch.testing.assert_close(S, h0)
    monkeypatch.setattr(_cpp_library._LOADER, "lib", None)
    monkeypatch.setattr(_cpp_library._LOADER, "tried", True)
    assert OPS[kernel].pick("auto", torch.zeros(1).device.type) is OPS[kernel].get("chunk")
    with pytest.raises(RuntimeError, match="unavailable"):
        delta_entry(kernel)(*args, impl="cpp")


def delta_auto_picks_triton_on_cuda_only(kernel, monkeypatch):
    from hybridc_torch.ops import OPS, _triton

    monkeypatch.delenv("HYBRIDC_KERNEL", raising=False)
    cpu = "cpp" if _cpp_library.available() else "chunk"
    op = OPS[kernel]
    assert op.auto("cpu") == cpu and op.auto("cuda") == "triton"
    assert op.pick("auto", "cpu") is op.get(cpu)
    assert op.pick("auto", "cuda") is op.get("triton")
    assert op.pick("triton", "cpu") is op.get("triton")
    with pytest.raises(ValueError, match="'triton'"):
        op.pick("nope", "cpu")
    monkeypatch.setattr(_triton, "triton_available", lambda: False)
    assert op.pick("auto", "cuda") is op.get("reference")


def delta_triton_bf16(gated):
    """bf16 inputs against the fp32 reference on the same (rounded) values: o in bf16, state in fp32; loose grads."""
    kw = triton_gdr_inputs(2, 2 * TRITON_CHUNK + 3, init=True, strong=False, gated=gated)
    kw_bf = {n: None if x is None else x.bfloat16() for n, x in kw.items()}
    kw_bf["initial_state"] = kw["initial_state"]                            # the state stays fp32
    kw_32 = {n: None if x is None else x.float() for n, x in kw_bf.items()}
    (o_r, S_r), g_r = run_and_grad_f32(triton_gdr_fn("reference", gated=gated), kw_32)
    (o, S), g = run_and_grad_f32(triton_gdr_fn("triton", gated=gated), kw_bf, device=TRITON_DEVICE)
    assert o.dtype == torch.bfloat16 and S.dtype == torch.float32
    close_scaled(o.float(), o_r, 2e-2, 2e-2, "output")
    close_scaled(S, S_r, 2e-2, 2e-2, "final state")
    for name in g_r:
        close_scaled(g[name].float(), g_r[name], 5e-2, 5e-2, f"grad of {name}")


def triton_gdr_fn(impl, chunk_size=TRITON_CHUNK, gated=True):
    entry = gated_delta_rule if gated else delta_rule

    def fn(**kw):
        return entry(**kw, output_final_state=True, impl=impl, chunk_size=chunk_size)
    return fn


# ------------------------------------------------------------------------------- delta family: fla oracles
FLA_TOL = dict(atol=1e-5, rtol=1e-5)
FLA_GRAD_TOL = dict(atol=1e-4, rtol=1e-4)


def fla_run(kernel, x, h0, impl="auto", scale=K ** -0.5):
    """The entry point on fla_inputs-style x (a dict), returning (o, final state)."""
    if kernel == "delta_rule":
        return delta_rule(x["q"], x["k"], x["v"], x["beta"], initial_state=h0, output_final_state=True, impl=impl)
    if kernel == "gated_delta_rule":
        return gated_delta_rule(x["q"], x["k"], x["v"], x["g"], x["beta"], initial_state=h0,
                                output_final_state=True, impl=impl)
    return rwkv7(x["q"], x["w"], x["k"], x["v"], x["a"], x["b"], scale=scale, initial_state=h0,
                 output_final_state=True, impl=impl)


def split_sequences_chain_through_state(kernel, T1):
    x = fla_inputs(9, seed=5)
    first = {n: t[:, :T1] for n, t in x.items() if n != "h0"}
    second = {n: t[:, T1:] for n, t in x.items() if n != "h0"}
    o, S = fla_run(kernel, x, x["h0"])
    o1, S1 = fla_run(kernel, first, x["h0"])
    o2, S2 = fla_run(kernel, second, S1)
    torch.testing.assert_close(torch.cat([o1, o2], 1), o, **FLA_TOL)
    torch.testing.assert_close(S2, S, **FLA_TOL)


def fla_grads(fn, tensors):
    ts = {n: t.detach().clone().requires_grad_(True) for n, t in tensors.items()}
    o, S = fn(ts)
    ((o * torch.linspace(-1, 1, o.shape[-1])).sum() + (S ** 2).sum()).backward()
    return {n: t.grad for n, t in ts.items()}


def impl_dispatch(kernel, naive):
    """The declared impls, auto against the reference on CPU, and an unknown impl named in the error."""
    from hybridc_torch import ops
    from hybridc_torch.ops import OPS

    assert OPS[kernel].get("reference") is naive.reference and "chunk" in OPS[kernel].impls
    x = fla_inputs(3)
    args = {"delta_rule": ("q", "k", "v", "beta"), "gated_delta_rule": ("q", "k", "v", "g", "beta"),
            "rwkv7": ("q", "w", "k", "v", "a", "b")}[kernel]
    entry = getattr(ops, kernel)
    o_auto, _ = entry(*(x[n] for n in args), impl="auto")
    o_ref, _ = entry(*(x[n] for n in args), impl="reference")
    torch.testing.assert_close(o_auto, o_ref, atol=1e-5, rtol=1e-4)  # auto = the chunked kernel on CPU
    with pytest.raises(ValueError, match="'auto', 'reference'"):
        entry(*(x[n] for n in args), impl="triton-please")
