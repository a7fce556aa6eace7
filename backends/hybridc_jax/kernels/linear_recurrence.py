"""Diagonal linear recurrence h_t = a_t * h_{t-1} + x_t (the scan behind Griffin's RG-LRU, LRU, S5, ...), in JAX.

Paper: De et al., "Griffin: Mixing Gated Linear Recurrences with Local Attention for Efficient Language Models"
(2024), Sec. 2.4. Reference implementation: google-deepmind/recurrentgemma ``rnn_scan``
(recurrentgemma/jax/scan.py, recurrentgemma/torch/layers.py): sequential scan with an fp32 accumulator, outputs
cast back to x's dtype. Mirrors hybridc_torch/kernels/linear_recurrence.py with ``lax.scan`` over time.

CPU: ``auto`` runs torch's C++ scan as an XLA custom call (``impl="cpp"``, see ``cpu_ffi``): 0.43 / 1.6 ms forward /
forward+backward at B4 L1024 D256. Without a compiler it falls back to the reference. XLA forms measured (B4 L1024
D256 fp32, jit, compile excluded): the reference ``lax.scan`` itself is the fastest of them: forward ~1.4 ms, forward+backward (``jax.grad`` through the scan) ~4.8 ms.
Slower, measured in the same run: ``lax.associative_scan`` over time (2.2 / 9.6 ms), the two-level chunked scan
below (``impl="chunk"``, chunk 32: 3.9 / 13.9 ms), a ``jax.custom_vjp`` with a reverse-scan backward (1.7 / 5.6 ms),
``lax.scan(unroll=2..16)`` (2-20x slower); torch's C++ scan 0.5 / 6.4 ms. ``chunk_linear_recurrence`` mirrors
torch's chunked scan (chunk-local end states and decay products in one pass over the T in-chunk steps, vectorised
over chunks; the chunk-boundary states by a ``lax.scan`` over chunks; outputs by a second pass): about 2T + L/T
sequential steps instead of L.

Glossary of dimension letters:
    B: batch    L: sequence length    D: channels
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax import lax

from ._dispatch import choose

__all__ = ["linear_recurrence", "linear_recurrence_step", "reference", "chunk_linear_recurrence"]


def _acc_dtype(dtype) -> jnp.dtype:
    """Accumulation dtype: fp32, or fp64 when the inputs are fp64."""
    return jnp.float64 if dtype == jnp.float64 else jnp.float32


def linear_recurrence_step(h, a_t, x_t):
    """One step: returns the new state a_t * h + x_t (B, D) in the accumulation dtype."""
    acc = _acc_dtype(x_t.dtype)
    return a_t.astype(acc) * h.astype(acc) + x_t.astype(acc)  # (B, D)


def reference(a, x, initial_state=None):
    """Sequential oracle. a, x (B, L, D); initial_state (B, D). Returns (h (B, L, D) in x.dtype, h_last (B, D) fp32)."""
    batch, _, channels = x.shape
    acc = _acc_dtype(x.dtype)
    h = initial_state.astype(acc) if initial_state is not None else jnp.zeros((batch, channels), acc)  # (B, D)

    def cell(h, inputs):
        h = linear_recurrence_step(h, *inputs)  # (B, D)
        return h, h

    h, hs = lax.scan(cell, h, (jnp.moveaxis(a, 1, 0), jnp.moveaxis(x, 1, 0)))  # (B, D), (L, B, D)
    return jnp.moveaxis(hs, 0, 1).astype(x.dtype), h


def _auto_chunk(length: int) -> int:
    """About sqrt(L) (a power of two in [8, 128]): balances the 2T in-chunk steps against the L/T chunk steps."""
    return int(min(128, max(8, 2 ** round(math.log2(max(length, 1)) / 2))))


def _affine_step(h, inputs):
    """h -> a_t h + x_t, emitting the new h (the ``lax.scan`` cell of both passes)."""
    a_t, x_t = inputs
    h = a_t * h + x_t
    return h, h


def chunk_linear_recurrence(a, x, initial_state=None, *, chunk_size: int | None = None):
    """Two-level chunked scan, same contract as `reference`; ``chunk_size`` None picks about sqrt(L)."""
    batch, length, channels = x.shape
    acc = _acc_dtype(x.dtype)
    h0 = initial_state.astype(acc) if initial_state is not None else jnp.zeros((batch, channels), acc)  # (B, D)
    if length == 0:
        return jnp.zeros((batch, 0, channels), x.dtype), h0
    T = max(1, min(int(chunk_size or _auto_chunk(length)), length))
    nc, pad = -(-length // T), -length % T
    a, x = a.astype(acc), x.astype(acc)
    if pad:  # padding steps come after every real step: a = 1, x = 0 leaves the real outputs untouched
        a = jnp.pad(a, ((0, 0), (0, pad), (0, 0)), constant_values=1)
        x = jnp.pad(x, ((0, 0), (0, pad), (0, 0)))
    a4, x4 = (v.reshape(batch, nc, T, channels).transpose(2, 1, 0, 3) for v in (a, x))  # (T, c, B, D)

    def local(carry, inputs):  # chunk-local end state from a zero start, and the chunk's decay product
        end, prod = carry
        a_t, x_t = inputs
        return (a_t * end + x_t, prod * a_t), None

    zeros = jnp.zeros((nc, batch, channels), acc)  # (c, B, D)
    (end, prod), _ = lax.scan(local, (zeros, jnp.ones_like(zeros)), (a4, x4))  # (c, B, D) each
    h_last, starts = lax.scan(lambda h, pe: (pe[0] * h + pe[1], h), h0, (prod, end))  # (B, D), (c, B, D)
    _, hs = lax.scan(_affine_step, starts, (a4, x4))  # (T, c, B, D)
    h = hs.transpose(2, 1, 0, 3).reshape(batch, nc * T, channels)[:, :length]  # (B, L, D)
    return h.astype(x.dtype), h_last


def _pallas(*args, **kwargs):
    """The Pallas GPU kernel (``pallas_linear_recurrence``), imported on first call; interpret mode on CPU."""
    from .pallas_linear_recurrence import pallas_linear_recurrence
    return pallas_linear_recurrence(*args, **kwargs)


def cpp(a, x, initial_state=None):
    """The C++ scan torch uses, as an XLA custom call (``cpu_ffi``; compiled on first use). CPU only."""
    from . import cpu_ffi

    if cpu_ffi.load() is None:
        raise RuntimeError("the C++ linear recurrence kernel could not be built here; use impl='reference'")
    return cpu_ffi.linear_recurrence_cpp(a, x, initial_state)


_IMPLS = {"reference": reference, "chunk": chunk_linear_recurrence, "cpp": cpp, "pallas": _pallas}


def _auto(device: str = "cpu") -> str:
    """GPU: the Pallas kernel (on a GPU host, only if it lowers there; else the CPU choice). CPU: the C++ scan as an
    XLA custom call when it builds (B4 L1024 D256: 0.43 / 1.6 ms fwd / fwd+bwd vs lax.scan 1.4 / 3.7 ms), else the
    ``lax.scan`` reference, the fastest XLA form measured (benchmarks/_jax_kernels.py)."""
    if device == "gpu":
        from .pallas_linear_recurrence import lowering_available
        if jax.default_backend() != "gpu" or lowering_available():
            return "pallas"
    from . import cpu_ffi

    return "cpp" if cpu_ffi.load() is not None else "reference"


def _pick(impl: str):
    return choose("linear_recurrence", _IMPLS, impl, _auto(jax.default_backend()))


def linear_recurrence(a, x, initial_state=None, *, impl="auto", chunk_size=None):
    """h_t = a_t * h_{t-1} + x_t with h_{-1} = initial_state (zeros if None).

    a, x (B, L, D); initial_state (B, D). Returns (h (B, L, D) in x.dtype, h_last (B, D) fp32).
    ``impl``: "auto" (CPU: "cpp", or the ``lax.scan`` reference when the C++ kernel cannot be built; GPU: "pallas"),
    "cpp", "reference", "chunk", "pallas". ``chunk_size`` is passed
    to the chunked scan (default: about sqrt(L)) and ignored by the reference.
    """
    fn = _pick(impl)
    if fn is chunk_linear_recurrence and chunk_size is not None:
        return fn(a, x, initial_state, chunk_size=chunk_size)
    return fn(a, x, initial_state)
