"""Selective scan: the S6 recurrence of Mamba-1, in JAX.

Paper: Gu & Dao, "Mamba: Linear-Time Sequence Modeling with Selective State Spaces" (2023), Alg. 2 / Sec. 3.
Reference implementation: mamba_ssm ``selective_scan_fn`` / ``selective_scan_ref`` (state-spaces/mamba); the
same shapes and semantics as transformers' ``mamba_selective_scan`` (models/mamba/modeling_mamba.py).
Mirrors hybridc_torch/ops/selective_scan/.

Per channel d and state index n (ZOH for A, Euler for B, as in the reference):
    dt_t     = softplus(delta_t + delta_bias)            (if delta_softplus, else delta_t + delta_bias)
    h_t      = exp(dt_t * A) * h_{t-1} + dt_t * B_t * u_t
    y_t      = sum_n C_t * h_t + D * u_t
    out_t    = y_t * silu(z_t)                           (if z is given)

Implementations: ``naive.py`` (``impl="reference"``, the ``lax.scan`` oracle, and the decoding step); ``cpp.py``
(``impl="cpp"``, what ``auto`` runs on CPU: torch's fused C++ kernel as an XLA custom call, 0.94x torch's time
forward, B4 L1024 D512 N16; without a C++ compiler ``auto`` falls back to the XLA form); ``chunk.py``
(``impl="chunk"``, the fastest XLA form measured: chunks of unrolled steps with a recomputing custom VJP);
``pallas.py`` (``impl="pallas"``, what ``auto`` picks for GPUs: a Pallas kernel, interpret mode on CPU).

Glossary of dimension letters:
    B: batch    D: channels (d_inner)    L: sequence length    N: state size    G: groups of B/C (D % G == 0)
"""

from __future__ import annotations

import jax

from hybridc_native.choice import Op

from .._ffi_library import available
from .naive import reference, selective_scan_step

__all__ = ["selective_scan", "selective_scan_step", "reference", "OP"]


def _pallas_lowers() -> bool:
    """Whether the Pallas kernel compiles for this host's GPU (asked only on a GPU host: the probe compiles it)."""
    from .pallas import lowering_available

    return lowering_available()


def _auto(device: str) -> str:
    """GPU: the Pallas kernel (on a GPU host, only if it lowers there; else the CPU choice). CPU: the C++ kernel as
    an XLA custom call when it builds (0.94x torch's time forward, B4 L1024 D512 N16), else chunk, the fastest
    XLA form measured (benchmarks/_jax_kernels.py)."""
    if device == "gpu" and (jax.default_backend() != "gpu" or _pallas_lowers()):
        return "pallas"
    return "cpp" if available() else "chunk"


OP = Op("selective_scan", __name__, {"reference": "naive:reference", "chunk": "chunk:chunk_selective_scan",
                                     "cpp": "cpp:selective_scan_cpp", "pallas": "pallas:pallas_selective_scan"},
        auto=_auto)


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                   return_last_state=False, *, initial_state=None, impl="auto"):
    """mamba_ssm ``selective_scan_fn`` semantics.

    u, delta (B, D, L); A (D, N); B, C (B, N, L) or (B, G, N, L); D (D,); z (B, D, L); delta_bias (D,);
    initial_state (B, D, N). Returns out (B, D, L), or (out, last_state (B, D, N) fp32) if return_last_state.
    impl: "auto" (CPU: "cpp", else "chunk" when the C++ kernel cannot be built; GPU: "pallas"), "cpp", "chunk",
    "pallas" or "reference".
    """
    out, last_state = OP.pick(impl, jax.default_backend())(u, delta, A, B, C, D, z, delta_bias, delta_softplus,
                                                           initial_state)
    return (out, last_state) if return_last_state else out
