"""SSD: the scalar-decay state space recurrence of Mamba-2.

Paper: Dao & Gu, "Transformers are SSMs: Generalized Models and Efficient Algorithms Through Structured State Space
Duality" (ICML 2024), Sec. 6-7. Reference implementation: mamba_ssm ``mamba_chunk_scan_combined``
(mamba_ssm/ops/triton/ssd_combined.py; its ``ssd_minimal_discrete`` gives the chunked form) and transformers'
``mamba2_chunk_scan`` (models/mamba2/modeling_mamba2.py). The reference here is the sequential recurrence;
``chunk_size`` only matters to chunked/parallel implementations and is ignored by it.

Per head h (heads share B/C within a group g = h // (H / G)):
    dt_t  = softplus(dt_t + dt_bias)  (if dt_softplus, else dt_t + dt_bias)
    S_t   = exp(dt_t * A_h) * S_{t-1} + dt_t * x_t B_t^T          S: (P, N)
    y_t   = S_t C_t + D_h * x_t
    out_t = y_t * silu(z_t)                                       (if z is given)

Implementations: ``naive.py`` (``impl="reference"``, and the decoding step); ``chunk.py`` (``impl="chunk"``, the SSD
chunked algorithm, paper Sec. 6: what ``auto`` picks on CPU when the C++ kernels cannot be built); ``cpp.py``
(``impl="cpp"``, what ``auto`` picks on CPU: the fused sequential C++ kernel with a checkpointed reverse-scan
backward, faster than ``chunk`` at every shape measured, benchmarks/RESULTS.md "Issue 16"); ``triton.py``
(``impl="triton"``, what ``auto`` picks on CUDA when triton imports: Triton kernels for the same chunked algorithm;
its backward recomputes through ``chunk_ssd``).

Glossary of dimension letters:
    B: batch    L: sequence length    H: heads    P: head dim    G: groups of B/C (H % G == 0)    N: state size
"""

from __future__ import annotations

from hybridc_native.choice import Op

from .. import _cpp_library, _triton
from .naive import reference, ssd_step

__all__ = ["ssd", "ssd_step", "reference", "OP"]


def _auto(device: str) -> str:
    """CPU: "cpp" when the C++ kernels build, else "chunk"; "triton" on CUDA when triton imports; else the reference.

    The measured rule on CPU is simply "cpp": the sequential kernel does ~3 vector ops per state element and step
    (~8 for the backward) against the chunked form's T x T blocks and autograd traffic, so it won at every shape
    measured (B 1-4, L 256-4096, N 16-128, P 64; no crossover found, benchmarks/RESULTS.md "Issue 16")."""
    if device == "cpu":
        return "cpp" if _cpp_library.available() else "chunk"
    return "triton" if device == "cuda" and _triton.triton_available() else "reference"


OP = Op("ssd", __name__, {"reference": "naive:reference", "chunk": "chunk:chunk_ssd", "cpp": "cpp:ssd_cpp",
                          "triton": "triton:triton_ssd"}, auto=_auto)


def ssd(x, dt, A, B, C, chunk_size, D=None, z=None, dt_bias=None, initial_states=None, dt_softplus=False,
        return_final_states=False, *, impl="auto"):
    """mamba_ssm ``mamba_chunk_scan_combined`` semantics (dt_limit fixed to (0, inf)).

    x (B, L, H, P); dt (B, L, H); A (H,); B, C (B, L, G, N); D (H,) or (H, P); z (B, L, H, P); dt_bias (H,);
    initial_states (B, H, P, N). Returns y (B, L, H, P), or (y, final_states (B, H, P, N) fp32).
    """
    y, final = OP.pick(impl, x.device.type)(x, dt, A, B, C, chunk_size, D, z, dt_bias, initial_states, dt_softplus)
    return (y, final) if return_final_states else y
