"""The gated delta rule recurrence (Gated DeltaNet), in JAX.

Paper: Yang, Kautz & Hatamizadeh, "Gated Delta Networks: Improving Mamba2 with Delta Rule" (2024, arXiv:2412.06464).
Reference implementation: flash-linear-attention, ``fla.ops.gated_delta_rule`` (``chunk_gated_delta_rule`` signature,
[B, T, H, K] layout; ``fla/ops/gated_delta_rule/naive.py::naive_recurrent_gated_delta_rule`` for the math). Mirrors
hybridc_torch/ops/gated_delta_rule/.

Per head, with state S (K, V), log-space decay g_t (scalar per head) and one step t:
    S'  = exp(g_t) * S_{t-1}                          # (K, V)
    u_t = beta_t * (v_t - S'^T k_t)                   # (V,)
    S_t = S' + k_t u_t^T                              # (K, V)
    o_t = S_t^T (scale * q_t)                         # (V,)
No internal L2 normalisation or gate activation: the caller passes normalised q/k, g in log space, beta in (0, 1).

Implementations: ``naive.py`` (``impl="reference"``, a ``lax.scan`` over time, and the decoding step); ``cpp.py``
(``impl="cpp"``, what ``auto`` runs on CPU: torch's fused C++ kernel as an XLA custom call); ``chunk.py``
(``impl="chunk"``, the chunked WY / UT-transform form, chunk 64, with ``lax.scan`` over chunks for the state pass;
and ``impl="scan_chunk"``, what ``auto`` picks elsewhere or without a compiler: the reference's forward when not
differentiated, the chunked form under ``jax.grad``, each the faster one there).

Dimension glossary:
    B batch, T time (sequence length), H heads, K key/query head dim, V value head dim.
"""
from __future__ import annotations

import jax

from hybridc_native.choice import Op

from .._ffi_library import available
from .naive import gated_delta_rule_step, reference

__all__ = ["gated_delta_rule", "gated_delta_rule_step", "reference", "OP"]


def _auto(device: str) -> str:
    """CPU: the C++ kernel as an XLA custom call when it builds (B4 L1024: f+b ~1.7x faster than torch's chunked
    form), else "scan_chunk" (the scan forward with the chunked backward), which GPUs also get for now."""
    return "cpp" if device == "cpu" and available() else "scan_chunk"


OP = Op("gated_delta_rule", __name__, {"reference": "naive:reference", "chunk": "chunk:chunk_gated_delta_rule",
                                       "scan_chunk": "chunk:scan_chunk_gated_delta_rule",
                                       "cpp": "cpp:gated_delta_rule_cpp"}, auto=_auto)


def gated_delta_rule(q, k, v, g, beta, scale=None, initial_state=None, output_final_state=False, *, impl="auto",
                     chunk_size=None):
    """Gated delta rule over a sequence, as fla's ``chunk_gated_delta_rule`` (no in-kernel l2norm/gate/sigmoid).

    q, k (B, T, H, K); v (B, T, H, V); g (B, T, H) log decay; beta (B, T, H); scale defaults to K**-0.5;
    initial_state (B, H, K, V) or None. Returns (o (B, T, H, V), final_state (B, H, K, V) or None).
    impl: "auto" (CPU: "cpp", else "scan_chunk": scan forward, chunked backward), "reference", "chunk",
    "scan_chunk" or "cpp"; chunk_size (None = the impl's default) is ignored by the reference and "cpp".
    """
    fn = OP.pick(impl, jax.default_backend())
    extra = {} if chunk_size is None or fn is reference else {"chunk_size": chunk_size}
    return fn(q, k, v, g, beta, scale=scale, initial_state=initial_state, output_final_state=output_final_state,
              **extra)
