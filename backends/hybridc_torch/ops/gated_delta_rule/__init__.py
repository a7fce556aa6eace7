"""The gated delta rule recurrence (Gated DeltaNet).

Paper: Yang, Kautz & Hatamizadeh, "Gated Delta Networks: Improving Mamba2 with Delta Rule" (2024, arXiv:2412.06464).
Reference implementation: flash-linear-attention, ``fla.ops.gated_delta_rule`` (``chunk_gated_delta_rule`` signature,
[B, T, H, K] layout; ``fla/ops/gated_delta_rule/naive.py::naive_recurrent_gated_delta_rule`` for the math).

Per head, with state S (K, V), log-space decay g_t (scalar per head) and one step t:
    S'  = exp(g_t) * S_{t-1}                          # (K, V)
    u_t = beta_t * (v_t - S'^T k_t)                   # (V,)
    S_t = S' + k_t u_t^T                              # (K, V)
    o_t = S_t^T (scale * q_t)                         # (V,)
No internal L2 normalisation or gate activation: the caller passes normalised q/k, g in log space, beta in (0, 1).

Implementations: ``naive.py`` (``impl="reference"``, and the decoding step); ``chunk.py`` (``impl="chunk"``, the WY /
UT-transform form, ``auto`` on CPU when the C++ kernels cannot be built); ``cpp.py`` (``impl="cpp"``, what ``auto``
runs on CPU: the fused sequential C++ kernel, 2-5x the chunked form's speed, B4 L1024); ``triton.py``
(``impl="triton"``, what ``auto`` picks on CUDA when triton imports: Triton kernels for ``chunk_delta_core``'s
chunked form; its backward recomputes through ``chunk_delta_core``).

Dimension glossary:
    B batch, T time (sequence length), H heads, K key/query head dim, V value head dim.
"""
from __future__ import annotations

from hybridc_native.choice import Op

from .. import _cpp_library, _triton
from .naive import gated_delta_rule_step, reference

__all__ = ["gated_delta_rule", "gated_delta_rule_step", "reference", "OP"]


def _auto(device: str) -> str:
    """CPU: the C++ kernel when it builds, else "chunk"; "triton" on CUDA when triton imports; else the reference.
    (The delta rule's choice too.)"""
    if device == "cpu":
        return "cpp" if _cpp_library.available() else "chunk"
    return "triton" if device == "cuda" and _triton.triton_available() else "reference"


OP = Op("gated_delta_rule", __name__, {"reference": "naive:reference", "chunk": "chunk:chunk_gated_delta_rule",
                                       "cpp": "cpp:gated_delta_rule_cpp",
                                       "triton": "triton:triton_gated_delta_rule"}, auto=_auto)


def gated_delta_rule(q, k, v, g, beta, scale=None, initial_state=None, output_final_state=False, *, impl="auto",
                     chunk_size=None):
    """Gated delta rule over a sequence, as fla's ``chunk_gated_delta_rule`` (no in-kernel l2norm/gate/sigmoid).

    q, k (B, T, H, K); v (B, T, H, V); g (B, T, H) log decay; beta (B, T, H); scale defaults to K**-0.5;
    initial_state (B, H, K, V) or None. Returns (o (B, T, H, V), final_state (B, H, K, V) or None).
    impl: "auto" (C++ on CPU, else chunked; Triton on CUDA), "reference", "chunk", "cpp" or "triton"; chunk_size
    (None = the impl's default) is ignored by the reference and the C++ kernel.
    """
    fn = OP.pick(impl, q.device.type)
    extra = {} if chunk_size is None or fn is reference else {"chunk_size": chunk_size}
    return fn(q, k, v, g, beta, scale=scale, initial_state=initial_state, output_final_state=output_final_state,
              **extra)
