"""Selective scan (Mamba-1's S6 recurrence) as a Pallas GPU kernel, forward and backward.

Paper: Gu & Dao, "Mamba: Linear-Time Sequence Modeling with Selective State Spaces" (2023), Sec. 3.3 (the
hardware-aware scan: state kept in fast memory, never materialised in HBM; recomputation in the backward).
Reference design: mamba_ssm's CUDA ``selective_scan`` (csrc/selective_scan): one thread block per (batch, channel),
the state in registers while walking time in chunks, only chunk-boundary states written out, and a backward that
recomputes each chunk's states from those checkpoints before a reverse pass. Unlike it, our threads split channels
and N, not time: each program walks time sequentially (Pallas exposes no intra-program scan over a register axis), and
many channel blocks run in parallel. Semantics and
shapes are exactly ``selective_scan.reference`` (u, delta, z (B, D, L); A (D, N); B, C (B, N, L) or (B, G, N, L);
D, delta_bias (D,); initial_state (B, D, N) -> out (B, D, L) in u.dtype, last_state (B, D, N) fp32).

Layout (outside the kernel, fused by XLA into one copy per tensor): u, delta, z go time-major (B, Lp, Dp) so a time
step reads block_d contiguous channels; B, C go (B, Lp, G, Np) so a step reads N contiguous values. Padding: L up to
a multiple of ``chunk`` (steps t >= L are masked to dt = 0, i.e. identity steps, so the final state is exact), the
channels of each group up to a multiple of block_d and N up to a power of two (zeros: padded channels/states stay 0).

Grid / tiling: grid (B, Dp / block_d), block_d a power of two dividing the padded group width, so a program's
channels share one B/C group. Program (b, j) keeps the fp32 state h (block_d, Np) in registers (the ``fori_loop``
carry); the loop walks chunks, and each chunk's ``chunk`` steps are unrolled (straight-line code, independent loads
issued ahead of the dependent math). Per step it loads u, delta, z (block_d,), B_t, C_t (Np,), computes
dt = softplus(delta + bias), h = exp(dt A) h + (dt u) B_t, y = h . C_t + D u, out = y silu(z), and stores out.
A, D, bias and h0 are loaded once. When differentiating, the forward also stores h at every chunk start
(checkpoints (B, L/chunk, Dp, Np) fp32); plain inference writes no checkpoints.

Backward (``jax.custom_vjp``, a Pallas kernel on the same grid walking chunks in reverse): for each chunk it reloads
the checkpoint and recomputes the chunk's ``chunk + 1`` states into registers (a Python list: unrolled, so no dynamic
register indexing and no HBM workspace), then walks the chunk backwards with the adjoint g (block_d, Np):
    g = g_next + dy C_t;  du = dt (g . B_t) + D dy;  d(dt) = u (g . B_t) + sum_n g h_{t-1} a_t A;
    dB_t, dC_t partials = sums over the program's channels;  dA += g h_{t-1} a_t dt;  g_next = a_t g,
with a_t = exp(dt A) and dy = dout silu(z). dB/dC partials (B, Lp, Dp/block_d, Np) and the per-batch dA, dD,
d(bias) partials are reduced outside by XLA (no atomics). dh0 is the final adjoint.

Bandwidth (s = bytes per input element; each byte once; partial sums are fp32):
    forward  read 3 B L D s (u, delta, z) + 2 B L G N s (B, C); write B L D s (out) + 4 B D N (last)
             (+ 4 B D N L / chunk for checkpoints when differentiating)
    backward read 4 B L D s (u, delta, z, dout) + 2 B L G N s + 4 B D N L / chunk; write 3 B L D s (du, ddelta, dz)
             + 2 * 4 B L N D / block_d (dB, dC partials)
The layout copies add one read and one write of u, delta, z (and out) outside the kernel; a caller already holding
time-major activations can skip them by calling ``_scan`` directly.

Lowering (jax 0.10.2, read from jax/_src/pallas/pallas_call.py): on CUDA ``pl.pallas_call`` defaults to Mosaic GPU
(deprecated there in favour of ``plgpu.kernel``; it stages whole blocks in shared memory through TMA, which (L,
block_d) blocks do not fit). We pass ``pallas.triton.CompilerParams`` to lower through Pallas' Triton backend, whose
model (program per grid cell, refs as HBM pointers, ``fori_loop`` -> ``scf.for``, power-of-two tensors, no scratch)
this kernel follows. Only portable Pallas is used (BlockSpec, grid, refs, ``lax.fori_loop``), so ``interpret=True``
runs it on CPU. ``lowering_available()`` says whether the GPU lowering compiles here.

Checked without a GPU: both kernels cross-lower for CUDA on a CPU jaxlib (``.trace(...).lower(lowering_platforms=
("cuda",))``; the tests do this), and the Triton IR they produce compiles with Triton 3.9 and its ptxas for sm_90a.
With the defaults (block_d 32, chunk 8, N 16, 4 warps, bf16): forward 40 registers, backward 255 registers, no spills
(chunk 16 spills 448 bytes in the backward; hence the default chunk 8). Never run on a GPU: speed is unmeasured.
A CPU jaxlib cannot lower Mosaic GPU at all, so that path is untried.

Glossary of dimension letters:
    B: batch    D: channels (d_inner)    L: sequence length    N: state size    G: groups of B/C (D % G == 0)
    Lp, Dp, Np: padded L, D, N
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pltriton

__all__ = ["pallas_selective_scan", "lowering_available"]

_NUM_WARPS = 4  # Triton warps per program (GPU only; unverified tuning)
_IN_NAMES = ("u", "dl", "z", "B", "C", "A", "D", "bias", "h0")


class _Cfg(NamedTuple):
    """Static kernel configuration (hashable: a ``custom_vjp`` non-differentiable argument)."""
    length: int  # true L (steps >= length are padding)
    chunk: int  # steps per checkpoint, unrolled inside the time loop
    block_d: int  # channels per program (power of two)
    group_blocks: int  # channel blocks per B/C group
    softplus: bool
    has_z: bool
    interpret: bool
    acc: str  # accumulation dtype name


class _Ref:
    """Named access to a kernel's refs (Python-level only: nothing of it reaches the lowering)."""
    def __init__(self, refs, names):
        self.__dict__.update(zip(names, refs))


def _resolve_interpret(interpret) -> bool:
    """None -> interpret on the CPU backend, compile for the accelerator otherwise."""
    return jax.default_backend() == "cpu" if interpret is None else bool(interpret)


def _compiler_params(cfg: _Cfg):
    """Pin the Triton lowering on GPU (see the module docstring); nothing in interpret mode."""
    return None if cfg.interpret else pltriton.CompilerParams(num_warps=_NUM_WARPS, num_stages=2)


def _in_names(cfg: _Cfg) -> list:
    return [n for n in _IN_NAMES if n != "z" or cfg.has_z]


def _specs(cfg: _Cfg, lp: int, np_: int, n_chunks: int) -> dict:
    """BlockSpecs for program (b, j) of grid (B, Dp / block_d), keyed by the role of the array."""
    bd, gb = cfg.block_d, cfg.group_blocks
    return dict(
        seq=pl.BlockSpec((None, lp, bd), lambda b, j: (b, 0, j)),  # (B, Lp, Dp) -> (Lp, bd)
        bc=pl.BlockSpec((None, lp, None, np_), lambda b, j: (b, 0, j // gb, 0)),  # (B, Lp, G, Np) -> (Lp, Np)
        part=pl.BlockSpec((None, lp, None, np_), lambda b, j: (b, 0, j, 0)),  # (B, Lp, nD, Np) -> (Lp, Np)
        mat=pl.BlockSpec((bd, np_), lambda b, j: (j, 0)),  # (Dp, Np) -> (bd, Np)
        vec=pl.BlockSpec((bd,), lambda b, j: (j,)),  # (Dp,) -> (bd,)
        bvec=pl.BlockSpec((None, bd), lambda b, j: (b, j)),  # (B, Dp) -> (bd,)
        state=pl.BlockSpec((None, bd, np_), lambda b, j: (b, j, 0)),  # (B, Dp, Np) -> (bd, Np)
        ckpt=pl.BlockSpec((None, n_chunks, bd, np_), lambda b, j: (b, 0, j, 0)),  # -> (nC, bd, Np)
    )


def _in_specs(cfg: _Cfg, s: dict) -> list:
    role = dict(u="seq", dl="seq", z="seq", B="bc", C="bc", A="mat", D="vec", bias="vec", h0="state")
    return [s[role[n]] for n in _in_names(cfg)]


# ------------------------------------------------------------------------------------------------ per-step math
def _softplus(x):
    """log(1 + e^x) as jax.nn.softplus computes it (stable for both signs)."""
    return jnp.maximum(x, 0.0) + jnp.log1p(jnp.exp(-jnp.abs(x)))


def _dt(cfg: _Cfg, r: _Ref, p: dict, t):
    """(pre-activation x, dt) (block_d,) at step t; dt = 0 on padded steps (an identity step)."""
    x = r.dl[t, :].astype(p["acc"]) + p["bias"]
    dt = _softplus(x) if cfg.softplus else x
    if cfg.length % cfg.chunk:
        dt = jnp.where(t < cfg.length, dt, 0.0)
    return x, dt


def _load_params(r: _Ref, acc) -> dict:
    return dict(acc=acc, A=r.A[...].astype(acc), D=r.D[...].astype(acc), bias=r.bias[...].astype(acc))


def _advance(cfg: _Cfg, r: _Ref, p: dict, t, h):
    """One step of the recurrence: returns (new h (block_d, Np), (u, x, dt, B_t)) for the backward."""
    acc = p["acc"]
    u = r.u[t, :].astype(acc)  # (bd,)
    x, dt = _dt(cfg, r, p, t)  # (bd,)
    b_t = r.B[t, :].astype(acc)  # (Np,)
    h = jnp.exp(dt[:, None] * p["A"]) * h + (dt * u)[:, None] * b_t[None, :]  # (bd, Np)
    return h, (u, x, dt, b_t)


# ------------------------------------------------------------------------------------------------ forward kernel
def _forward_kernel(*refs, cfg: _Cfg, save: bool):
    """Program (b, j): walk the chunks, unrolled steps inside; store out, last and (if save) chunk-start states."""
    r = _Ref(refs, _in_names(cfg) + ["out", "last", "ckpt"][: 3 if save else 2])
    p = _load_params(r, jnp.dtype(cfg.acc))

    def chunk_body(c, h):
        if save:
            r.ckpt[c] = h
        for k in range(cfg.chunk):
            t = c * cfg.chunk + k
            h, (u, _, _, _) = _advance(cfg, r, p, t, h)
            y = jnp.sum(h * r.C[t, :].astype(p["acc"])[None, :], axis=1) + p["D"] * u  # (bd,)
            if cfg.has_z:
                y = y * jax.nn.silu(r.z[t, :].astype(p["acc"]))
            r.out[t, :] = y.astype(r.out.dtype)
        return h

    n_chunks = r.u.shape[0] // cfg.chunk
    r.last[...] = lax.fori_loop(0, n_chunks, chunk_body, r.h0[...].astype(p["acc"]))


def _forward(cfg: _Cfg, save: bool, args: dict):
    """args: the time-major, padded inputs by name -> (out (B, Lp, Dp), last (B, Dp, Np)[, ckpt (B, nC, Dp, Np)])."""
    batch, lp, dp = args["u"].shape
    np_ = args["A"].shape[1]
    n_chunks = lp // cfg.chunk
    s = _specs(cfg, lp, np_, n_chunks)
    out_shape = [jax.ShapeDtypeStruct((batch, lp, dp), args["u"].dtype),
                 jax.ShapeDtypeStruct((batch, dp, np_), cfg.acc),
                 jax.ShapeDtypeStruct((batch, n_chunks, dp, np_), cfg.acc)][: 3 if save else 2]
    return pl.pallas_call(
        functools.partial(_forward_kernel, cfg=cfg, save=save), out_shape=out_shape,
        grid=(batch, dp // cfg.block_d), in_specs=_in_specs(cfg, s),
        out_specs=[s["seq"], s["state"], s["ckpt"]][: 3 if save else 2],
        interpret=cfg.interpret, compiler_params=_compiler_params(cfg), name="selective_scan_fwd",
    )(*(args[n] for n in _in_names(cfg)))


# ------------------------------------------------------------------------------------------------ backward kernel
_GRAD_NAMES = ["du", "ddl", "dz", "dB", "dC", "dA", "dD", "dbias", "dh0"]


def _grad_names(cfg: _Cfg) -> list:
    return [n for n in _GRAD_NAMES if n != "dz" or cfg.has_z]


def _reverse_step(cfg: _Cfg, r: _Ref, p: dict, t, h_prev, h, saved, carry):
    """Adjoint of step t given h_{t-1}, h_t and the step's (u, x, dt, B_t); carry = (g_next, dA, dD, dbias)."""
    acc = p["acc"]
    u, x, dt, b_t = saved
    g_next, dA, dD, dbias = carry
    c_t = r.C[t, :].astype(acc)  # (Np,)
    dy = r.dout[t, :].astype(acc)  # (bd,) d out_t
    if cfg.has_z:
        z = r.z[t, :].astype(acc)
        sig = jax.nn.sigmoid(z)
        y = jnp.sum(h * c_t[None, :], axis=1) + p["D"] * u
        r.dz[t, :] = (dy * y * sig * (1.0 + z * (1.0 - sig))).astype(r.dz.dtype)
        dy = dy * z * sig  # d y_t
    a = jnp.exp(dt[:, None] * p["A"])  # (bd, Np)
    g = g_next + dy[:, None] * c_t[None, :]  # (bd, Np) d h_t
    gb = jnp.sum(g * b_t[None, :], axis=1)  # (bd,)
    r.dC[t, :] = jnp.sum(dy[:, None] * h, axis=0)
    r.dB[t, :] = jnp.sum(g * (dt * u)[:, None], axis=0)
    r.du[t, :] = (dt * gb + p["D"] * dy).astype(r.du.dtype)
    da = g * h_prev * a  # (bd, Np) d(dt A)
    ddt = u * gb + jnp.sum(da * p["A"], axis=1)  # (bd,)
    if cfg.softplus:
        ddt = ddt * jax.nn.sigmoid(x)
    if cfg.length % cfg.chunk:
        ddt = jnp.where(t < cfg.length, ddt, 0.0)
    r.ddl[t, :] = ddt.astype(r.ddl.dtype)
    return a * g, dA + da * dt[:, None], dD + dy * u, dbias + ddt


def _backward_kernel(*refs, cfg: _Cfg):
    """Program (b, j): chunks in reverse; each recomputes its states from the checkpoint, then walks back."""
    r = _Ref(refs, _in_names(cfg) + ["ckpt", "dout", "dlast"] + _grad_names(cfg))
    p = _load_params(r, jnp.dtype(cfg.acc))
    n_chunks = r.u.shape[0] // cfg.chunk

    def chunk_body(i, carry):
        c = n_chunks - 1 - i
        hs, saved = [r.ckpt[c]], []  # states h_{t-1} .. of the chunk, in registers
        for k in range(cfg.chunk):
            h, step_inputs = _advance(cfg, r, p, c * cfg.chunk + k, hs[-1])
            hs.append(h)
            saved.append(step_inputs)
        for k in reversed(range(cfg.chunk)):
            carry = _reverse_step(cfg, r, p, c * cfg.chunk + k, hs[k], hs[k + 1], saved[k], carry)
        return carry

    zeros = jnp.zeros(r.A.shape, p["acc"])  # (bd, Np)
    init = (r.dlast[...].astype(p["acc"]), zeros, jnp.zeros(r.D.shape, p["acc"]), jnp.zeros(r.D.shape, p["acc"]))
    g, dA, dD, dbias = lax.fori_loop(0, n_chunks, chunk_body, init)
    r.dh0[...], r.dA[...], r.dD[...], r.dbias[...] = g, dA, dD, dbias


def _backward(cfg: _Cfg, args: dict, ckpt, dout, dlast) -> list:
    """Per-program gradients: du, ddelta[, dz] (B, Lp, Dp); dB, dC partials (B, Lp, nD, Np); dA (B, Dp, Np),
    dD, dbias (B, Dp) per-batch partials; dh0 (B, Dp, Np)."""
    batch, lp, dp = args["u"].shape
    np_, n_blocks, acc = args["A"].shape[1], dp // cfg.block_d, cfg.acc
    s = _specs(cfg, lp, np_, ckpt.shape[1])
    sds = jax.ShapeDtypeStruct
    shapes = dict(du=sds((batch, lp, dp), args["u"].dtype), ddl=sds((batch, lp, dp), args["dl"].dtype),
                  dz=sds((batch, lp, dp), args["z"].dtype if cfg.has_z else acc),
                  dB=sds((batch, lp, n_blocks, np_), acc), dC=sds((batch, lp, n_blocks, np_), acc),
                  dA=sds((batch, dp, np_), acc), dD=sds((batch, dp), acc), dbias=sds((batch, dp), acc),
                  dh0=sds((batch, dp, np_), acc))
    role = dict(du="seq", ddl="seq", dz="seq", dB="part", dC="part", dA="state", dD="bvec", dbias="bvec",
                dh0="state")
    names = _grad_names(cfg)
    return pl.pallas_call(
        functools.partial(_backward_kernel, cfg=cfg), out_shape=[shapes[n] for n in names],
        grid=(batch, n_blocks), in_specs=_in_specs(cfg, s) + [s["ckpt"], s["seq"], s["state"]],
        out_specs=[s[role[n]] for n in names],
        interpret=cfg.interpret, compiler_params=_compiler_params(cfg), name="selective_scan_bwd",
    )(*(args[n] for n in _in_names(cfg)), ckpt, dout, dlast)


# ------------------------------------------------------------------------------------------------ custom_vjp
@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _scan(cfg: _Cfg, args: dict):
    """Time-major padded inputs (see ``_prepare``) -> (out (B, Lp, Dp), last_state (B, Dp, Np) fp32)."""
    out, last = _forward(cfg, False, args)
    return out, last


def _scan_fwd(cfg: _Cfg, args: dict):
    out, last, ckpt = _forward(cfg, True, args)
    return (out, last), (args, ckpt)


def _scan_bwd(cfg: _Cfg, residuals, cotangents):
    args, ckpt = residuals
    dout, dlast = cotangents
    grads = dict(zip(_grad_names(cfg), _backward(cfg, args, ckpt, dout, dlast)))
    batch, lp, groups, np_ = args["B"].shape

    def group_sum(part):  # (B, Lp, nD, Np) -> (B, Lp, G, Np): channel blocks of one group share B_t, C_t
        return part.reshape(batch, lp, groups, cfg.group_blocks, np_).sum(3)

    cot = dict(u=grads["du"], dl=grads["ddl"], B=group_sum(grads["dB"]), C=group_sum(grads["dC"]),
               A=grads["dA"].sum(0), D=grads["dD"].sum(0), bias=grads["dbias"].sum(0), h0=grads["dh0"])
    if cfg.has_z:
        cot["z"] = grads["dz"]
    return ({n: cot[n].astype(args[n].dtype) for n in args},)


_scan.defvjp(_scan_fwd, _scan_bwd)


# ------------------------------------------------------------------------------------------------ layout
def _pad_to(v, axis: int, size: int):
    """Zero-pad axis of v up to size."""
    widths = [(0, 0)] * v.ndim
    widths[axis] = (0, size - v.shape[axis])
    return jnp.pad(v, widths)


def _channels(v, groups: int, width: int):
    """(..., D, *rest) with D at axis 1 or 0 -> the channels of each group padded to width: (..., G * width, *rest)."""
    axis = 1 if v.ndim == 3 else 0  # (B, D, X) or (D, ...)
    shape = v.shape
    v = v.reshape(shape[:axis] + (groups, shape[axis] // groups) + shape[axis + 1:])
    v = _pad_to(v, axis + 1, width)
    return v.reshape(shape[:axis] + (groups * width,) + shape[axis + 1:])


def _prepare(u, delta, z, A, B, C, D, delta_bias, h0, groups, width, lp, np_, acc) -> dict:
    """Public-layout inputs -> the kernel's time-major, padded arrays by name."""
    def seq(v):  # (B, D, L) -> (B, Lp, Dp)
        return jnp.swapaxes(_pad_to(_channels(v, groups, width), 2, lp), 1, 2)

    def bc(M):  # (B, N, L) | (B, G, N, L) -> (B, Lp, G, Np)
        M = M[:, None] if M.ndim == 3 else M
        return jnp.transpose(_pad_to(_pad_to(M, 2, np_), 3, lp), (0, 3, 1, 2))

    channels = A.shape[0]
    D = jnp.zeros((channels,), acc) if D is None else D
    bias = jnp.zeros((channels,), acc) if delta_bias is None else delta_bias
    args = dict(u=seq(u), dl=seq(delta), B=bc(B), C=bc(C), A=_pad_to(_channels(A, groups, width), 1, np_),
                D=_channels(D, groups, width), bias=_channels(bias, groups, width),
                h0=_pad_to(_channels(h0, groups, width), 2, np_))
    if z is not None:
        args["z"] = seq(z)
    return args


def _block(group_width: int, block_d: int) -> int:
    """A power-of-two channel block: block_d, shrunk to the next power of two >= D / G for narrow groups."""
    if block_d < 1 or block_d & (block_d - 1):
        raise ValueError(f"block_d must be a power of two, got {block_d}")
    return min(block_d, pl.next_power_of_2(group_width))


# ------------------------------------------------------------------------------------------------ public API
def pallas_selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                          initial_state=None, *, interpret=None, block_d: int = 32, chunk: int = 8):
    """mamba_ssm ``selective_scan_fn`` semantics as a Pallas kernel; returns (out (B, D, L), last_state (B, D, N)).

    u, delta, z (B, D, L); A (D, N); B, C (B, N, L) or (B, G, N, L); D, delta_bias (D,); initial_state (B, D, N).
    interpret: None = interpret on the CPU backend. block_d: channels per program (power of two); chunk: steps per
    checkpoint (unrolled in the kernel; the backward holds chunk + 1 states of (block_d, N) in registers).
    """
    if chunk < 1:
        raise ValueError(f"chunk must be a positive number of steps, got {chunk}")
    batch, channels, length = u.shape
    n_state = A.shape[1]
    groups = 1 if B.ndim == 3 else B.shape[1]
    acc = jnp.float64 if u.dtype == jnp.float64 else jnp.float32
    bd = _block(channels // groups, block_d)
    width = -(-(channels // groups) // bd) * bd  # padded channels per group
    lp, np_ = -(-length // chunk) * chunk, pl.next_power_of_2(n_state)
    h0 = jnp.zeros((batch, channels, n_state), acc) if initial_state is None else initial_state.astype(acc)
    cfg = _Cfg(length, chunk, bd, width // bd, bool(delta_softplus), z is not None, _resolve_interpret(interpret),
               jnp.dtype(acc).name)
    args = _prepare(u, delta, z, A, B, C, D, delta_bias, h0, groups, width, lp, np_, acc)
    out, last = _scan(cfg, args)  # (B, Lp, Dp), (B, Dp, Np)
    out = jnp.swapaxes(out, 1, 2).reshape(batch, groups, width, lp)[:, :, : channels // groups, :length]
    last = last.reshape(batch, groups, width, np_)[:, :, : channels // groups, :n_state]
    return out.reshape(batch, channels, length), last.reshape(batch, channels, n_state)


@functools.cache
def lowering_available() -> bool:
    """True when the kernel can run here: always on CPU (interpreter); elsewhere, whether a tiny forward and
    backward compile for the default backend (Pallas' Triton lowering)."""
    if jax.default_backend() == "cpu":
        return True
    u = jnp.ones((1, 16, 4), jnp.float32)
    A, BC = -jnp.ones((16, 4), jnp.float32), jnp.ones((1, 4, 4), jnp.float32)

    def loss(u, A, BC):
        out, last = pallas_selective_scan(u, u, A, BC, BC, interpret=False, chunk=4)
        return out.sum() + last.sum()

    try:
        jax.jit(jax.grad(loss, argnums=(0, 1, 2))).lower(u, A, BC).compile()
        return True
    except Exception:  # noqa: BLE001 -- any lowering/compile failure means "not available"
        return False
