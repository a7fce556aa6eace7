"""Diagonal linear recurrence h_t = a_t * h_{t-1} + x_t as a Pallas GPU kernel (forward and backward).

Paper: De et al., "Griffin: Mixing Gated Linear Recurrences with Local Attention for Efficient Language Models"
(2024), Sec. 2.4 (the RG-LRU scan). Reference design: google-deepmind/recurrentgemma's Pallas LRU scan
(recurrentgemma/jax/pallas.py: grid over batch and channel tiles, on GPU the whole sequence walked inside one program,
fp32 carry, a reverse scan for the backward) and flash-linear-attention's fused-recurrent HGRN Triton kernel
(fla/ops/hgrn): one program per (batch, channel block), the state in registers, time walked sequentially.
Semantics and shapes are exactly ``linear_recurrence.reference``: a, x (B, L, D), h0 (B, D) ->
(h (B, L, D) in x.dtype, h_last (B, D) fp32).

Grid / tiling: grid (B, D / block_d). Program (b, j) owns channels [j*block_d, (j+1)*block_d) of batch b; its
BlockSpecs give it the (L, block_d) column of a, x and h. Step t loads a[t, block] and x[t, block] (block_d
contiguous elements: the (B, L, D) layout is already time-major), updates the fp32 state (block_d,) held in the
``fori_loop`` carry (registers) and stores h[t, block]. Nothing else touches HBM; h_last is stored once.
Ragged D: block_d is a power of two (Triton tensors must be) and D is zero-padded to a multiple of it outside the
kernel (a = x = 0 keeps padded channels at 0); there is no masked load, so the same code is valid for the interpreter
and the GPU lowering.

Backward (``jax.custom_vjp``, a second Pallas kernel walking time in reverse with the same grid):
    g_t = dh_t + a_{t+1} g_{t+1}  (g_{L-1} also gets d h_last),  dx_t = g_t,  da_t = g_t h_{t-1},  dh0 = a_0 g_0.
h_{t-1} is read back from the forward output h (saved as a residual, no recomputation), h_{-1} = h0. With fp32
inputs this is exact; with bf16 inputs h_{t-1} carries bf16 rounding (relative 2^-8, the order of the output's own
rounding), which the tests bound against ``jax.grad`` of the fp32 reference.

Bandwidth (s = bytes per element of the inputs; every byte touched once):
    forward  read 2 B L D s (a, x) + B D 4 (h0), write B L D s (h) + B D 4 (h_last)  -> ~3 B L D s
    backward read 3 B L D s (a, h, dh) + small, write 2 B L D s (dx, da)            -> ~5 B L D s

Lowering (what jax 0.10.2 offers, checked by reading jax/_src/pallas/pallas_call.py): on CUDA ``pl.pallas_call``
defaults to Mosaic GPU (``jax_pallas_use_mosaic_gpu=True``; that path is deprecated in favour of ``plgpu.kernel`` and
stages whole blocks in shared memory through TMA, which an (L, block_d) block does not fit). We pass
``pallas.triton.CompilerParams`` so the call lowers through Pallas' Triton backend, whose model (a program per grid
cell, refs as pointers into HBM, ``fori_loop`` -> ``scf.for``, power-of-two tensors) is the one this kernel is written
for. Only portable Pallas is used (BlockSpec, grid, refs, ``lax.fori_loop``), so ``interpret=True`` runs it on CPU.
``lowering_available()`` tells callers whether the GPU lowering compiles here (``auto`` falls back otherwise).
Checked without a GPU: the kernels cross-lower for CUDA on a CPU jaxlib (the tests do this) and the Triton IR compiles
with Triton 3.9's ptxas for sm_90a (block_d 128: forward 26, backward 32 registers, no spills). Never run on a GPU.
A CPU jaxlib cannot lower Mosaic GPU at all, so that path is untried.

Glossary of dimension letters:
    B: batch    L: sequence length    D: channels
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pltriton

__all__ = ["pallas_linear_recurrence", "lowering_available"]

_NUM_WARPS = 4  # Triton warps per program (GPU only; unverified tuning)


class _Cfg(NamedTuple):
    """Static kernel configuration (hashable: a ``custom_vjp`` non-differentiable argument)."""
    block_d: int
    interpret: bool
    acc: str  # accumulation dtype name


def _resolve_interpret(interpret) -> bool:
    """None -> interpret on the CPU backend, compile for the accelerator otherwise."""
    return jax.default_backend() == "cpu" if interpret is None else bool(interpret)


def _compiler_params(cfg: _Cfg):
    """Pin the Triton lowering on GPU (see the module docstring); nothing in interpret mode."""
    return None if cfg.interpret else pltriton.CompilerParams(num_warps=_NUM_WARPS, num_stages=2)


def _specs(cfg: _Cfg, length: int):
    """BlockSpecs of a (B, L, D) sequence column and a (B, D) per-channel vector for program (b, j)."""
    seq = pl.BlockSpec((None, length, cfg.block_d), lambda b, j: (b, 0, j))  # (L, block_d)
    vec = pl.BlockSpec((None, cfg.block_d), lambda b, j: (b, j))  # (block_d,)
    return seq, vec


# ------------------------------------------------------------------------------------------------ forward kernel
def _forward_kernel(a_ref, x_ref, h0_ref, h_ref, last_ref, *, acc):
    """Program (b, j): h_t = a_t h_{t-1} + x_t over all t, state (block_d,) in registers."""
    def step(t, h):
        h = a_ref[t, :].astype(acc) * h + x_ref[t, :].astype(acc)  # (block_d,)
        h_ref[t, :] = h.astype(h_ref.dtype)
        return h

    last_ref[...] = lax.fori_loop(0, a_ref.shape[0], step, h0_ref[...].astype(acc))


def _forward(cfg: _Cfg, a, x, h0):
    """a, x (B, L, Dp); h0 (B, Dp) acc -> (h (B, L, Dp) x.dtype, h_last (B, Dp) acc)."""
    batch, length, channels = x.shape
    seq, vec = _specs(cfg, length)
    return pl.pallas_call(
        functools.partial(_forward_kernel, acc=jnp.dtype(cfg.acc)),
        out_shape=(jax.ShapeDtypeStruct(x.shape, x.dtype), jax.ShapeDtypeStruct((batch, channels), cfg.acc)),
        grid=(batch, channels // cfg.block_d), in_specs=[seq, seq, vec], out_specs=(seq, vec),
        interpret=cfg.interpret, compiler_params=_compiler_params(cfg), name="linear_recurrence_fwd",
    )(a, x, h0)


# ------------------------------------------------------------------------------------------------ backward kernel
def _backward_kernel(a_ref, h_ref, h0_ref, dh_ref, dlast_ref, dx_ref, da_ref, dh0_ref, *, acc):
    """Program (b, j): reverse walk; the carry is a_{t+1} g_{t+1} (starts at d h_last)."""
    length = a_ref.shape[0]
    h0 = h0_ref[...].astype(acc)  # (block_d,)

    def step(i, carry):
        t = length - 1 - i
        g = dh_ref[t, :].astype(acc) + carry  # (block_d,)
        h_prev = jnp.where(t > 0, h_ref[jnp.maximum(t - 1, 0), :].astype(acc), h0)
        dx_ref[t, :] = g.astype(dx_ref.dtype)
        da_ref[t, :] = (g * h_prev).astype(da_ref.dtype)
        return a_ref[t, :].astype(acc) * g

    dh0_ref[...] = lax.fori_loop(0, length, step, dlast_ref[...].astype(acc))


def _backward(cfg: _Cfg, a, h, h0, dh, dlast):
    """Cotangents (dh (B, L, Dp), dlast (B, Dp)) -> (da, dx, dh0) in a's, x's (= h's) and acc dtypes."""
    batch, length, channels = h.shape
    seq, vec = _specs(cfg, length)
    return pl.pallas_call(
        functools.partial(_backward_kernel, acc=jnp.dtype(cfg.acc)),
        out_shape=(jax.ShapeDtypeStruct(h.shape, h.dtype), jax.ShapeDtypeStruct(a.shape, a.dtype),
                   jax.ShapeDtypeStruct((batch, channels), cfg.acc)),
        grid=(batch, channels // cfg.block_d), in_specs=[seq, seq, vec, seq, vec], out_specs=(seq, seq, vec),
        interpret=cfg.interpret, compiler_params=_compiler_params(cfg), name="linear_recurrence_bwd",
    )(a, h, h0, dh, dlast)


# ------------------------------------------------------------------------------------------------ custom_vjp
@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _scan(cfg: _Cfg, a, x, h0):
    return _forward(cfg, a, x, h0)


def _scan_fwd(cfg: _Cfg, a, x, h0):
    h, last = _forward(cfg, a, x, h0)
    return (h, last), (a, h, h0)


def _scan_bwd(cfg: _Cfg, residuals, cotangents):
    a, h, h0 = residuals
    dh, dlast = cotangents
    dx, da, dh0 = _backward(cfg, a, h, h0, dh, dlast)
    return da, dx, dh0


_scan.defvjp(_scan_fwd, _scan_bwd)


# ------------------------------------------------------------------------------------------------ public API
def _block(channels: int, block_d: int) -> int:
    """A power-of-two channel block: block_d, shrunk to the next power of two >= D for narrow inputs."""
    if block_d < 1 or block_d & (block_d - 1):
        raise ValueError(f"block_d must be a power of two, got {block_d}")
    return min(block_d, pl.next_power_of_2(channels))


def pallas_linear_recurrence(a, x, initial_state=None, *, interpret=None, block_d: int = 128):
    """h_t = a_t * h_{t-1} + x_t with h_{-1} = initial_state (zeros if None), as a Pallas kernel.

    a, x (B, L, D); initial_state (B, D). Returns (h (B, L, D) in x.dtype, h_last (B, D) fp32 (fp64 for fp64 x)).
    interpret: None = interpret on the CPU backend. block_d: channels per program (a power of two).
    """
    batch, _, channels = x.shape
    acc = jnp.float64 if x.dtype == jnp.float64 else jnp.float32
    cfg = _Cfg(_block(channels, block_d), _resolve_interpret(interpret), jnp.dtype(acc).name)
    pad = -channels % cfg.block_d
    h0 = jnp.zeros((batch, channels), acc) if initial_state is None else initial_state.astype(acc)  # (B, D)
    if pad:
        a, x, h0 = (jnp.pad(v, [(0, 0)] * (v.ndim - 1) + [(0, pad)]) for v in (a, x, h0))
    h, last = _scan(cfg, a, x, h0)  # (B, L, Dp), (B, Dp)
    return h[..., :channels], last[:, :channels]


@functools.cache
def lowering_available() -> bool:
    """True when the kernel can run here: always on CPU (interpreter); elsewhere, whether a tiny forward and
    backward compile for the default backend (Pallas' Triton lowering)."""
    if jax.default_backend() == "cpu":
        return True
    a = jnp.full((1, 4, 16), 0.5, jnp.float32)

    def loss(a, x):
        h, last = pallas_linear_recurrence(a, x, interpret=False)
        return h.sum() + last.sum()

    try:
        jax.jit(jax.grad(loss, argnums=(0, 1))).lower(a, a).compile()
        return True
    except Exception:  # noqa: BLE001 -- any lowering/compile failure means "not available"
        return False
