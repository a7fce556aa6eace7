"""Selective scan: the S6 recurrence of Mamba-1.

Paper: Gu & Dao, "Mamba: Linear-Time Sequence Modeling with Selective State Spaces" (2023), Alg. 2 / Sec. 3.
Reference implementation: mamba_ssm ``selective_scan_fn`` / ``selective_scan_ref`` (state-spaces/mamba); the
same shapes and semantics as transformers' ``mamba_selective_scan`` (models/mamba/modeling_mamba.py).

Per channel d and state index n (ZOH for A, Euler for B, as in the reference):
    dt_t     = softplus(delta_t + delta_bias)            (if delta_softplus, else delta_t + delta_bias)
    h_t      = exp(dt_t * A) * h_{t-1} + dt_t * B_t * u_t
    y_t      = sum_n C_t * h_t + D * u_t
    out_t    = y_t * silu(z_t)                           (if z is given)

Implementations: ``naive.py`` (``impl="reference"``, the sequential oracle, and the decoding step); ``cpp.py``
(``impl="cpp"``, what ``auto`` picks on CPU when it builds: a fused C++ kernel compiled on first use; if that fails,
``auto`` warns once and uses the reference); ``triton.py`` (``impl="triton"``, what ``auto`` picks on CUDA when
triton imports: a chunked parallel scan with the state in registers; its backward is a reverse-scan kernel
recomputing from checkpoints).

Glossary of dimension letters:
    B: batch    D: channels (d_inner)    L: sequence length    N: state size    G: groups of B/C (D % G == 0)
"""

from __future__ import annotations

from hybridc_native.choice import Op

from .. import _cpp_library, _triton
from .naive import reference, selective_scan_step

__all__ = ["selective_scan", "selective_scan_step", "reference", "OP"]


def _auto(device: str) -> str:
    """CPU: the C++ kernel when it builds (warns once and falls back otherwise); CUDA: the Triton kernels when
    triton imports; elsewhere the reference."""
    if device != "cpu":
        return "triton" if device == "cuda" and _triton.triton_available() else "reference"
    return "cpp" if _cpp_library.available() else "reference"


OP = Op("selective_scan", __name__, {"reference": "naive:reference", "cpp": "cpp:selective_scan_cpp",
                                     "triton": "triton:triton_selective_scan"}, auto=_auto)


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                   return_last_state=False, *, initial_state=None, impl="auto"):
    """mamba_ssm ``selective_scan_fn`` semantics.

    u, delta (B, D, L); A (D, N); B, C (B, N, L) or (B, G, N, L); D (D,); z (B, D, L); delta_bias (D,);
    initial_state (B, D, N). Returns out (B, D, L), or (out, last_state (B, D, N) fp32) if return_last_state.
    """
    out, last_state = OP.pick(impl, u.device.type)(u, delta, A, B, C, D, z, delta_bias, delta_softplus,
                                                   initial_state)
    return (out, last_state) if return_last_state else out
