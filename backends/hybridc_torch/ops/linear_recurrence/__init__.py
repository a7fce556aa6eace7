"""Diagonal linear recurrence h_t = a_t * h_{t-1} + x_t (the scan behind Griffin's RG-LRU, LRU, S5, ...).

Paper: De et al., "Griffin: Mixing Gated Linear Recurrences with Local Attention for Efficient Language Models"
(2024), Sec. 2.4. Reference implementation: google-deepmind/recurrentgemma ``rnn_scan``
(recurrentgemma/torch/layers.py): sequential loop with an fp32 accumulator, outputs cast back to x's dtype.

Implementations: ``naive.py`` (``impl="reference"``, and the decoding step); ``cpp.py`` (``impl="cpp"``, what
``auto`` picks on CPU when the C++ kernels library builds: one fused pass, vectorised over channels, with a fused
reverse-scan backward); ``chunk.py`` (``impl="chunk"``, the fallback of ``auto`` when no compiler is available; pure
torch: a two-level chunked scan, about 2T + L/T Python-level steps per call instead of L); ``triton.py``
(``impl="triton"``, what ``auto`` picks on CUDA when triton imports: time tiles scanned in registers, coalesced over
channels; its backward is the reverse-scan kernel).

Glossary of dimension letters:
    B: batch    L: sequence length    D: channels
"""

from __future__ import annotations

from hybridc_native.choice import Op

from .. import _cpp_library, _triton
from .naive import linear_recurrence_step, reference

__all__ = ["linear_recurrence", "linear_recurrence_step", "reference", "OP"]


def _auto(device: str) -> str:
    """CPU: the C++ scan when the kernels library builds, else the chunked torch scan; CUDA: the Triton kernels
    when triton imports; elsewhere the reference."""
    if device != "cpu":
        return "triton" if device == "cuda" and _triton.triton_available() else "reference"
    return "cpp" if _cpp_library.available() else "chunk"


OP = Op("linear_recurrence", __name__, {"reference": "naive:reference", "chunk": "chunk:chunk_linear_recurrence",
                                        "cpp": "cpp:linear_recurrence_cpp",
                                        "triton": "triton:triton_linear_recurrence"}, auto=_auto)


def linear_recurrence(a, x, initial_state=None, *, impl="auto", chunk_size=None):
    """h_t = a_t * h_{t-1} + x_t with h_{-1} = initial_state (zeros if None).

    a, x (B, L, D); initial_state (B, D). Returns (h (B, L, D) in x.dtype, h_last (B, D) fp32).
    ``impl``: "auto" (CPU: "cpp", or "chunk" if the C++ kernels cannot be built; CUDA: "triton" when triton
    imports; reference elsewhere), "cpp", "chunk", "triton", "reference". ``chunk_size`` is passed to the chunked
    scan (default: about sqrt(L)) and ignored by the others.
    """
    fn = OP.pick(impl, x.device.type)
    if fn is OP.get("chunk") and chunk_size is not None:
        return fn(a, x, initial_state, chunk_size=chunk_size)
    return fn(a, x, initial_state)
