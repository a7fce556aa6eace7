"""SSD: the scalar-decay state space recurrence of Mamba-2, in JAX.

Paper: Dao & Gu, "Transformers are SSMs: Generalized Models and Efficient Algorithms Through Structured State Space
Duality" (ICML 2024), Sec. 6-7. Reference implementation: mamba_ssm ``mamba_chunk_scan_combined``
(mamba_ssm/ops/triton/ssd_combined.py; its ``ssd_minimal_discrete`` gives the chunked form) and transformers'
``mamba2_chunk_scan`` (models/mamba2/modeling_mamba2.py). Mirrors hybridc_torch/ops/ssd/.

Per head h (heads share B/C within a group g = h // (H / G)):
    dt_t  = softplus(dt_t + dt_bias)  (if dt_softplus, else dt_t + dt_bias)
    S_t   = exp(dt_t * A_h) * S_{t-1} + dt_t * x_t B_t^T          S: (P, N)
    y_t   = S_t C_t + D_h * x_t
    out_t = y_t * silu(z_t)                                       (if z is given)

Implementations: ``naive.py`` (``impl="reference"``, the ``lax.scan`` oracle, and the decoding step); ``chunk.py``
(``impl="chunk"``, the SSD chunked algorithm, paper Sec. 6, as torch's ``chunk_ssd``; and ``impl="scan_chunk"``,
the reference's values with the chunked form's gradients: what ``auto`` picks where the C++ kernel is not available);
``cpp.py`` (``impl="cpp"``, what ``auto`` runs on CPU when it builds: torch's fused C++ kernel as an XLA custom call).

Glossary of dimension letters:
    B: batch    L: sequence length    H: heads    P: head dim    G: groups of B/C (H % G == 0)    N: state size
"""

from __future__ import annotations

import jax

from hybridc_native.choice import Op

from .._ffi_library import available
from .naive import reference, ssd_step

__all__ = ["ssd", "ssd_step", "reference", "OP"]


def _auto(device: str) -> str:
    """CPU: the C++ kernel when it builds (faster than the chunked forms at every measured shape, as in torch:
    hybridc_torch/ops/ssd/__init__.py); elsewhere (and without a compiler) the scan forward with the chunked
    backward."""
    return "cpp" if device == "cpu" and available() else "scan_chunk"


OP = Op("ssd", __name__, {"reference": "naive:reference", "chunk": "chunk:chunk_ssd",
                          "scan_chunk": "chunk:scan_chunk_ssd", "cpp": "cpp:ssd_cpp"}, auto=_auto)


def ssd(x, dt, A, B, C, chunk_size, D=None, z=None, dt_bias=None, initial_states=None, dt_softplus=False,
        return_final_states=False, *, impl="auto"):
    """mamba_ssm ``mamba_chunk_scan_combined`` semantics (dt_limit fixed to (0, inf)).

    x (B, L, H, P); dt (B, L, H); A (H,); B, C (B, L, G, N); D (H,) or (H, P); z (B, L, H, P); dt_bias (H,);
    initial_states (B, H, P, N). Returns y (B, L, H, P), or (y, final_states (B, H, P, N) fp32).
    impl: "auto" (CPU: "cpp"; else "scan_chunk": scan forward, chunked backward), "cpp", "chunk", "scan_chunk" or
    "reference".
    """
    y, final = OP.pick(impl, jax.default_backend())(x, dt, A, B, C, chunk_size, D, z, dt_bias, initial_states,
                                                    dt_softplus)
    return (y, final) if return_final_states else y
