"""Diagonal linear recurrence h_t = a_t * h_{t-1} + x_t (the scan behind Griffin's RG-LRU, LRU, S5, ...), in JAX.

Paper: De et al., "Griffin: Mixing Gated Linear Recurrences with Local Attention for Efficient Language Models"
(2024), Sec. 2.4. Reference implementation: google-deepmind/recurrentgemma ``rnn_scan``
(recurrentgemma/jax/scan.py, recurrentgemma/torch/layers.py): sequential scan with an fp32 accumulator, outputs
cast back to x's dtype. Mirrors hybridc_torch/ops/linear_recurrence/.

Implementations: ``naive.py`` (``impl="reference"``, a ``lax.scan`` over time, and the decoding step; the fastest
XLA form measured, so ``auto``'s CPU fallback); ``cpp.py`` (``impl="cpp"``, what ``auto`` runs on CPU: torch's C++
scan as an XLA custom call, 0.43 / 1.6 ms forward / forward+backward at B4 L1024 D256); ``chunk.py``
(``impl="chunk"``, the two-level chunked scan); ``pallas.py`` (``impl="pallas"``, what ``auto`` picks for GPUs:
a Pallas kernel, interpret mode on CPU).

Glossary of dimension letters:
    B: batch    L: sequence length    D: channels
"""

from __future__ import annotations

import jax

from hybridc_native.choice import Op

from .._ffi_library import available
from .naive import linear_recurrence_step, reference

__all__ = ["linear_recurrence", "linear_recurrence_step", "reference", "OP"]


def _pallas_lowers() -> bool:
    """Whether the Pallas kernel compiles for this host's GPU (asked only on a GPU host: the probe compiles it)."""
    from .pallas import lowering_available

    return lowering_available()


def _auto(device: str) -> str:
    """GPU: the Pallas kernel (on a GPU host, only if it lowers there; else the CPU choice). CPU: the C++ scan as an
    XLA custom call when it builds (B4 L1024 D256: 0.43 / 1.6 ms fwd / fwd+bwd vs lax.scan 1.4 / 3.7 ms), else the
    ``lax.scan`` reference, the fastest XLA form measured (benchmarks/_jax_kernels.py)."""
    if device == "gpu" and (jax.default_backend() != "gpu" or _pallas_lowers()):
        return "pallas"
    return "cpp" if available() else "reference"


OP = Op("linear_recurrence", __name__, {"reference": "naive:reference", "chunk": "chunk:chunk_linear_recurrence",
                                        "cpp": "cpp:linear_recurrence_cpp",
                                        "pallas": "pallas:pallas_linear_recurrence"}, auto=_auto)


def linear_recurrence(a, x, initial_state=None, *, impl="auto", chunk_size=None):
    """h_t = a_t * h_{t-1} + x_t with h_{-1} = initial_state (zeros if None).

    a, x (B, L, D); initial_state (B, D). Returns (h (B, L, D) in x.dtype, h_last (B, D) fp32).
    ``impl``: "auto" (CPU: "cpp", or the ``lax.scan`` reference when the C++ kernel cannot be built; GPU: "pallas"),
    "cpp", "reference", "chunk", "pallas". ``chunk_size`` is passed
    to the chunked scan (default: about sqrt(L)) and ignored by the reference.
    """
    name = OP.resolve(impl, jax.default_backend())[0]
    if name == "chunk" and chunk_size is not None:
        return OP.get(name)(a, x, initial_state, chunk_size=chunk_size)
    return OP.get(name)(a, x, initial_state)
