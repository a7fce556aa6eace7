"""Fused one-token decoding steps of the Mamba-1 and Mamba-2 mixers: the C++ kernels of
``hybridc_native/csrc/decode_step.cpp`` (loaded by ``ops/_cpp_library.py``) through ctypes, writing the recurrent
states in place. Everything between a layer's in_proj and out_proj matmuls is one call: the conv-window shift and
multiply-sum, silu, (Mamba-1) x_proj / dt_proj / the optional inner RMSNorms, softplus, the state update
S = exp(dt A) S + dt u B, y = C.S + D u, and the gate (Mamba-2: its gated RMSNorm). The pure steps (the layers'
`step`, on ops/selective_scan/naive.py and ops/ssd/naive.py) are the oracles.

Used by the layers' in-place `step_` (what `generate` runs): fp32 on CPU, with the op's implementation resolving to
"cpp" (impl="auto"/"cpp", HYBRIDC_KERNEL, the library builds); elsewhere the layers fall back to their pure step.

Glossary of dimension letters:
    B: batch    E: inner channels    N: state size    R: dt rank    K: conv width    H: heads    P: head dim
    G: groups of B/C    X: Mamba-2 conv channels (E + 2 G N)
"""
from __future__ import annotations

import torch

from . import _cpp_library

__all__ = ["usable", "mamba_step_", "mamba2_step_", "PROJ_MAX_BATCH"]

PROJ_MAX_BATCH = 1  # up to this batch the layers pass in_proj / out_proj to the kernel (GEMVs); above, torch GEMMs


def usable(op, impl: str, x: torch.Tensor) -> bool:
    """True when the fused step runs for input x: CPU fp32, no autograd (the kernel has no backward: with grad
    enabled the layers run their differentiable pure step) and `op` (the layer's recurrence) resolving to "cpp"."""
    return x.device.type == "cpu" and x.dtype == torch.float32 and not torch.is_grad_enabled() \
        and op.resolve(impl, "cpu")[0] == "cpp" and _cpp_library.available()


def _ptr(t):
    return 0 if t is None else t.data_ptr()


def own(state: dict, key: str, dtype) -> torch.Tensor:
    """state[key] as a contiguous tensor of `dtype` the step may write in place (replaced in the dict once if not)."""
    t = state[key]
    if not t.is_contiguous() or t.dtype != dtype:
        t = state[key] = t.to(dtype).contiguous()
    return t


def _proj(x, proj):
    """The kernels' optional projection arguments: proj = (in_proj, out_proj) nn.Linear (fp32, contiguous) or None
    (-> zeros); with them, x (B, D) is the layer input and the result is out (B, D), allocated here."""
    if proj is None:
        return (0, 0, 0, 0, 0, 0, 0), None
    (inp, outp), D = proj, x.shape[1]
    out = x.new_empty(x.shape[0], D)
    w_in, w_out = inp.weight.contiguous(), outp.weight.contiguous()
    return (x.data_ptr(), w_in.data_ptr(), _ptr(inp.bias), w_out.data_ptr(), _ptr(outp.bias), out.data_ptr(), D), out


def mamba_step_(xz, state, conv_w, conv_b, x_proj, dt_proj_t, dt_bias, A, D, norms=None, eps=0.0, proj=None):
    """xz (B, 2E) in_proj output (x then z; rows may be strided) -> y (B, E) gated; or, with proj = (in_proj,
    out_proj), xz is the layer input x (B, D), both projections run in the kernel and out (B, D) is returned.
    state {"conv" (B, E, K-1), "ssm" (B, E, N)} updated in place. conv_w (E, K); x_proj (R + 2N, E); dt_proj_t:
    dt_proj's weight transposed (R, E); dt_bias (E,); A = -exp(A_log) (E, N); D (E,); norms: None or the (dt, B, C)
    RMSNorm weights (each None when weightless), eps theirs. Weights fp32; conv_w, dt_proj_t, A contiguous."""
    batch, E = xz.shape[0], conv_w.shape[0]
    conv, ssm = own(state, "conv", torch.float32), own(state, "ssm", torch.float32)
    if xz.stride(-1) != 1 or (proj is not None and not xz.is_contiguous()):
        xz = xz.contiguous()
    pargs, out = _proj(xz, proj)
    y = xz.new_empty(batch, E) if proj is None else None
    nw = (None, None, None) if norms is None else norms
    _cpp_library.load().hybridc_step_mamba(
        xz.data_ptr(), xz.stride(0), conv.data_ptr(), conv_w.data_ptr(), _ptr(conv_b), x_proj.contiguous().data_ptr(),
        dt_proj_t.data_ptr(), dt_bias.data_ptr(), int(norms is not None), _ptr(nw[0]), _ptr(nw[1]), _ptr(nw[2]), eps,
        A.data_ptr(), _ptr(D), ssm.data_ptr(), _ptr(y), batch, E, A.shape[-1], dt_proj_t.shape[0],
        conv_w.shape[1], *pargs)
    return y if proj is None else out


def mamba2_step_(zxbcdt, state, conv_w, conv_b, dt_bias, dt_min, dt_max, A_log, D, heads, groups,
                 norm_w=None, group_size=0, eps=0.0, norm_before_gate=False, proj=None):
    """zxbcdt (B, 2E + 2GN + H) in_proj output -> y (B, E) gated (and normed with norm_w); state {"conv" (B, X, K-1),
    "ssm" (B, H, P, N)} updated in place. dt = clamp(softplus(dt + dt_bias), dt_min, dt_max); A_log, D (H,).
    proj = (in_proj, out_proj): zxbcdt is the layer input x (B, D) and out_proj's output (B, D) is returned."""
    batch = zxbcdt.shape[0]
    conv, ssm = own(state, "conv", torch.float32), own(state, "ssm", torch.float32)
    if zxbcdt.stride(-1) != 1 or (proj is not None and not zxbcdt.is_contiguous()):
        zxbcdt = zxbcdt.contiguous()
    _, H, P, N = ssm.shape
    pargs, out = _proj(zxbcdt, proj)
    y = zxbcdt.new_empty(batch, H * P) if proj is None else None
    _cpp_library.load().hybridc_step_mamba2(
        zxbcdt.data_ptr(), zxbcdt.stride(0), conv.data_ptr(), conv_w.data_ptr(), _ptr(conv_b), _ptr(dt_bias),
        dt_min, dt_max, A_log.data_ptr(), _ptr(D), _ptr(norm_w), group_size, eps, int(norm_before_gate),
        ssm.data_ptr(), _ptr(y), batch, H, P, groups, N, conv_w.shape[1], *pargs)
    return y if proj is None else out
