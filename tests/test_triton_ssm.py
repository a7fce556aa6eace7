"""Triton GPU kernels for the selective scan and the linear recurrence == their sequential references.

Values and the gradients of every input (and of both outputs' cotangents: out and the final state) against
``selective_scan.reference`` / ``linear_recurrence.reference``, over every length class of the chunked walk
(1, T-1, T, T+1, 3T+5 with a small chunk T = 8 and small channel blocks, so ragged channel blocks and the dB/dC
partial sums across blocks are exercised), batch 1 and 3, with and without an initial state, strong and weak
decay; groups of B/C; the optional D, z, delta_bias and softplus; bf16 inputs; and ``impl="triton"`` through the
public entry points. On CPU the kernels run through Triton's interpreter (conftest.py sets TRITON_INTERPRET=1
before they are imported); on a GPU machine, ``TRITON_INTERPRET=0`` runs the same tests on CUDA tensors.

Glossary of dimension letters:
    B: batch    L: sequence length    D: channels    N: state size    G: groups
"""

import os
import subprocess
import sys
import textwrap

import pytest
import torch

pytest.importorskip("triton", reason="the Triton kernels need triton")

from hybridc_torch.ops import OPS, linear_recurrence, selective_scan  # noqa: E402
from hybridc_torch.ops.linear_recurrence import naive as lr_naive  # noqa: E402
from hybridc_torch.ops.linear_recurrence import triton as tlr  # noqa: E402
from hybridc_torch.ops.selective_scan import naive as ss_naive  # noqa: E402
from hybridc_torch.ops.selective_scan import triton as tss  # noqa: E402

T = 8  # chunk in the tests
LENGTHS = [1, T - 1, T, T + 1, 3 * T + 5]  # the brief's 7 is T - 1 here
F32 = torch.float32
DEVICE = "cuda" if os.environ.get("TRITON_INTERPRET") == "0" and torch.cuda.is_available() else "cpu"
VARIANTS = [(False, False), (True, True)]  # (initial state, strong decay): each length runs both
VARIANT_IDS = ["zero-h0-weak", "h0-strong"]


def _close(actual, expected, rtol=1e-4, atol=1e-5):
    """rtol plus an absolute tolerance scaled by the reference's magnitude (sums of many fp32 terms)."""
    scale = max(1.0, expected.abs().max().item()) if expected.numel() else 1.0
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol * scale)


def _loss(outputs):
    """A fixed random linear functional of all outputs (every output element gets a distinct cotangent)."""
    g = torch.Generator().manual_seed(1234)
    return sum((o.double() * torch.randn(o.shape, generator=g, dtype=torch.float64).to(o.device)).sum()
               for o in outputs)


def _run(fn, inputs):
    """fn(**leaves) on fresh leaf copies; returns (outputs, {name: grad})."""
    leaves = {k: (None if v is None else v.detach().clone().requires_grad_()) for k, v in inputs.items()}
    outs = fn(**leaves)
    wrt = {k: v for k, v in leaves.items() if v is not None}
    grads = torch.autograd.grad(_loss(outs), list(wrt.values()), allow_unused=True)
    return outs, dict(zip(wrt, grads))


def _compare(fn_ref, fn_fast, inputs, rtol=1e-4, atol=1e-5):
    (ref_outs, ref_grads), (outs, grads) = _run(fn_ref, inputs), _run(fn_fast, inputs)
    for o, r in zip(outs, ref_outs):
        assert o.dtype == r.dtype and o.shape == r.shape
        _close(o, r, rtol, atol)
    for k, r in ref_grads.items():
        assert grads[k] is not None and grads[k].dtype == inputs[k].dtype, k
        _close(grads[k], r, rtol, atol)


# ------------------------------------------------------------------------------------------ selective scan
def _ss_inputs(batch, channels, state, length, groups=None, *, strong=False, h0=False, full=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    bc = (batch, state, length) if groups is None else (batch, groups, state, length)
    kw = dict(u=r(batch, channels, length), delta=r(batch, channels, length) * (1.0 if strong else 0.5),
              A=-(torch.rand(channels, state, generator=g) * (8.0 if strong else 1.0) + (2.0 if strong else 0.05)),
              B=r(*bc), C=r(*bc), D=None, z=None, delta_bias=None,
              initial_state=r(batch, channels, state) if h0 else None)
    if full:
        kw.update(D=r(channels), z=r(batch, channels, length), delta_bias=r(channels) * 0.3)
    return {k: (None if v is None else v.to(DEVICE)) for k, v in kw.items()}


def _ss_ref(softplus=True):
    def fn(**kw):
        return ss_naive.reference(**kw, delta_softplus=softplus)
    return fn


def _ss_triton(softplus=True, block_d=2):
    def fn(**kw):
        return tss.triton_selective_scan(**kw, delta_softplus=softplus, chunk_size=T, block_d=block_d)
    return fn


@pytest.mark.parametrize("length", LENGTHS, ids=lambda n: f"L{n}")
@pytest.mark.parametrize("batch", [1, 3], ids=lambda b: f"B{b}")
@pytest.mark.parametrize("h0, strong", VARIANTS, ids=VARIANT_IDS)
def test_selective_scan_matches_reference(length, batch, h0, strong):
    channels = 3 if batch == 1 else 2  # D = 3: a ragged second channel block (kept small: the interpreter is slow)
    kw = _ss_inputs(batch, channels, 2, length, strong=strong, h0=h0, seed=length)
    _compare(_ss_ref(), _ss_triton(), kw)


@pytest.mark.parametrize("groups, full, softplus", [
    (None, False, False), (None, True, True), (None, True, False), (1, True, True), (2, False, False),
    (2, True, True)], ids=["bare-raw-dt", "D-z-bias-softplus", "D-z-bias-raw-dt", "G1-D-z-bias-softplus",
                           "G2-bare-raw-dt", "G2-D-z-bias-softplus"])
def test_selective_scan_options(groups, full, softplus):
    kw = _ss_inputs(1, 6, 3, T + 3, groups, h0=True, full=full, seed=7)  # G2: 3 channels a group; N = 3 padded
    if not softplus:
        kw["delta"] = kw["delta"].abs()
    _compare(_ss_ref(softplus), _ss_triton(softplus), kw)


def test_selective_scan_default_blocks_and_entry_point():
    """impl="triton" through `selective_scan` (default block size: one block) == the reference."""
    kw = _ss_inputs(2, 2, 2, 5, 1, h0=True, seed=3)

    def entry(impl):
        def fn(**k):
            return selective_scan(**k, delta_softplus=True, return_last_state=True, impl=impl)
        return fn
    _compare(entry("reference"), entry("triton"), kw)


def test_selective_scan_bf16_inputs():
    kw = _ss_inputs(2, 4, 2, T + 1, h0=True, seed=5)
    low = {k: (v if v is None or k == "A" else v.to(torch.bfloat16)) for k, v in kw.items()}
    up = {k: (v if v is None else v.float()) for k, v in low.items()}
    out, last = _ss_triton()(**low)
    ref, ref_last = _ss_ref()(**up)
    assert out.dtype == torch.bfloat16 and last.dtype == F32
    torch.testing.assert_close(out.float(), ref, rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(last, ref_last, rtol=1e-3, atol=1e-3)
    (_, grads), (_, ref_grads) = _run(_ss_triton(), low), _run(_ss_ref(), up)
    for k, r in ref_grads.items():
        assert grads[k].dtype == low[k].dtype, k
        torch.testing.assert_close(grads[k].float(), r, rtol=3e-2, atol=3e-2 * max(1.0, r.abs().max().item()))


def test_selective_scan_edge_cases(monkeypatch):
    kw = _ss_inputs(2, 3, 2, 0, h0=True)
    out, last = tss.triton_selective_scan(**kw)  # empty sequence: the reference's answer
    assert out.shape == (2, 3, 0)
    torch.testing.assert_close(last, kw["initial_state"])
    kw = _ss_inputs(1, 3, 2, 4)
    with pytest.raises(ValueError, match="power of two"):
        tss.triton_selective_scan(**kw, chunk_size=6)
    monkeypatch.setattr(tss, "_INTERPRET", False)
    if DEVICE == "cpu":
        with pytest.raises(RuntimeError, match="CUDA tensors"):
            tss.triton_selective_scan(**kw)


# --------------------------------------------------------------------------------------- linear recurrence
def _lr_inputs(batch, length, width, *, strong=False, h0=False, seed=0, dtype=F32):
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(batch, length, width, generator=g)
    a = a * 0.3 if strong else 0.9 + 0.1 * a
    if strong:  # exact zeros, as the RG-LRU's document resets produce
        a = a * (torch.rand(batch, length, width, generator=g) > 0.2).float()
    kw = dict(a=a, x=torch.randn(batch, length, width, generator=g),
              initial_state=torch.randn(batch, width, generator=g) if h0 else None)
    return {k: (None if v is None else v.to(DEVICE, dtype)) for k, v in kw.items()}


def _lr_triton(block_d=4):
    def fn(**kw):
        return tlr.triton_linear_recurrence(**kw, chunk_size=T, block_d=block_d)
    return fn


@pytest.mark.parametrize("length", LENGTHS, ids=lambda n: f"L{n}")
@pytest.mark.parametrize("batch", [1, 3], ids=lambda b: f"B{b}")
@pytest.mark.parametrize("h0", [False, True], ids=["zero-h0", "h0"])
@pytest.mark.parametrize("strong", [False, True], ids=["weak", "strong-resets"])
def test_linear_recurrence_matches_reference(length, batch, h0, strong):
    kw = _lr_inputs(batch, length, 3, strong=strong, h0=h0, seed=length)  # D = 3: a ragged second block
    _compare(lr_naive.reference, _lr_triton(block_d=2), kw)


def test_linear_recurrence_entry_point_and_dispatch():
    kw = _lr_inputs(2, 3, 5, h0=True, seed=1)  # default blocks (chunk 32, channels capped at 8)

    def entry(impl):
        def fn(**k):
            return linear_recurrence(**k, impl=impl)
        return fn
    _compare(entry("reference"), entry("triton"), kw)
    lr_op, ss_op = OPS["linear_recurrence"], OPS["selective_scan"]
    assert lr_op.auto("cuda") == ss_op.auto("cuda") == "triton"  # triton imports here
    assert lr_op.auto("cpu") in ("cpp", "chunk") and ss_op.auto("cpu") in ("cpp", "reference")
    assert lr_op.auto("meta") == ss_op.auto("meta") == "reference"


def test_linear_recurrence_bf16_inputs():
    kw = _lr_inputs(2, 2 * T + 1, 5, h0=True, seed=2, dtype=torch.bfloat16)
    up = {k: v.float() for k, v in kw.items()}
    h, last = _lr_triton()(**kw)
    ref, ref_last = lr_naive.reference(**up)
    assert h.dtype == torch.bfloat16 and last.dtype == F32
    torch.testing.assert_close(h.float(), ref, rtol=1e-2, atol=1e-2)
    torch.testing.assert_close(last, ref_last, rtol=1e-4, atol=1e-4)  # fp32 state from the same bf16 inputs
    (_, grads), (_, ref_grads) = _run(_lr_triton(), kw), _run(lr_naive.reference, up)
    for k, r in ref_grads.items():
        assert grads[k].dtype == torch.bfloat16, k
        torch.testing.assert_close(grads[k].float(), r, rtol=2e-2, atol=2e-2)


def test_linear_recurrence_edge_cases(monkeypatch):
    kw = _lr_inputs(2, 0, 3, h0=True)
    h, last = tlr.triton_linear_recurrence(**kw)
    assert h.shape == (2, 0, 3)
    torch.testing.assert_close(last, kw["initial_state"])
    kw = _lr_inputs(1, 4, 3)
    with pytest.raises(ValueError, match="power of two"):
        tlr.triton_linear_recurrence(**kw, block_d=3)
    with torch.no_grad():  # no grad: no fp32 copy of h, same values
        _close(tlr.triton_linear_recurrence(**kw)[0], lr_naive.reference(**kw)[0])
    monkeypatch.setattr(tlr, "_INTERPRET", False)
    if DEVICE == "cpu":
        with pytest.raises(RuntimeError, match="CUDA tensors"):
            tlr.triton_linear_recurrence(**kw)


# ------------------------------------------------------------------------------ GPU lowering without a GPU
_COMPILE_FOR_HOPPER = textwrap.dedent("""
    import os
    os.environ["TRITON_INTERPRET"] = "0"  # real kernels, compiled (not run) for sm_90 with triton's bundled ptxas
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from hybridc_torch.ops.linear_recurrence import triton as tlr
    from hybridc_torch.ops.selective_scan import triton as tss

    LOW = {"u_ptr", "delta_ptr", "z_ptr", "B_ptr", "C_ptr", "out_ptr", "dout_ptr", "du_ptr", "ddelta_ptr",
           "dz_ptr", "a_ptr", "x_ptr", "dh_ptr", "da_ptr", "dx_ptr"}  # bf16 inputs and outputs; states fp32

    def build(kernel, consts, num_warps):
        sig = {p.name: "constexpr" if p.is_constexpr else ("*bf16" if p.name in LOW else "*fp32")
               if p.name.endswith("_ptr") else "i32" for p in kernel.params}
        k = triton.compile(ASTSource(kernel, sig, consts), target=GPUTarget("cuda", 90, 32),
                           options=dict(num_warps=num_warps))
        assert k.asm["cubin"], kernel

    block_d, block_n = tss._blocks(16, 1536, 16, None)  # Mamba-130m: d_inner 1536, N 16
    for full in (True, False):
        flags = dict(HAS_D=full, HAS_Z=full, HAS_BIAS=full, SOFTPLUS=full, BLOCK_D=block_d, BLOCK_N=block_n, CHUNK=16)
        build(tss._ss_fwd_kernel, dict(flags, HAS_H0=full, SAVE_CKPT=True), 8)
        build(tss._ss_bwd_kernel, dict(flags, HAS_DLAST=full), 8)
    build(tlr._lr_fwd_kernel, dict(HAS_H0=True, SAVE_H32=True, BLOCK_D=64, CHUNK=16), 4)
    build(tlr._lr_bwd_kernel, dict(HAS_H0=True, HAS_DLAST=True, BLOCK_D=64, CHUNK=16), 4)
""")


def test_kernels_compile_for_hopper():
    """The kernels lower through TTIR/TTGIR/LLVM/PTX to an sm_90 cubin (what the interpreter cannot check)."""
    import triton.backends

    if "nvidia" not in triton.backends.backends:
        pytest.skip("triton has no NVIDIA backend here")
    env = dict(os.environ, TRITON_INTERPRET="0", TRITON_DEFAULT_FP_FUSION="1")
    proc = subprocess.run([sys.executable, "-c", _COMPILE_FOR_HOPPER], capture_output=True, text=True, env=env,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
