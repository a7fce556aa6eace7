"""The delta rule recurrence (DeltaNet), in JAX.

Paper: Schlag et al., "Linear Transformers Are Secretly Fast Weight Programmers" (2021, arXiv:2102.11174);
Yang et al., "Parallelizing Linear Transformers with the Delta Rule over Sequence Length" (2024, arXiv:2406.06484).
Reference implementation: flash-linear-attention, ``fla.ops.delta_rule`` (``chunk_delta_rule`` signature and
[B, T, H, K] layout; ``fla/ops/delta_rule/naive.py::delta_rule_recurrence`` for the math). Mirrors
hybridc_torch/ops/delta_rule/.

Per head, with state S (K, V) and one step t:
    u_t = beta_t * (v_t - S_{t-1}^T k_t)            # (V,)
    S_t = S_{t-1} + k_t u_t^T                        # (K, V)
    o_t = S_t^T (scale * q_t)                        # (V,)
No internal L2 normalisation: the caller normalises q and k.

Implementations: ``naive.py`` (``impl="reference"``, a ``lax.scan`` over time, and the decoding step); the others
are the gated delta rule's with no decay: ``chunk.py`` (``impl="chunk"``, the chunked WY / UT-transform form;
``impl="scan_chunk"``: the reference's forward when not differentiated, the chunked form under ``jax.grad``),
``cpp.py`` (``impl="cpp"``, the fused C++ kernel as an XLA custom call). ``auto`` is the gated delta rule's choice:
"cpp" on CPU when it builds, else "scan_chunk".

Dimension glossary:
    B batch, T time (sequence length), H heads, K key/query head dim, V value head dim.
"""
from __future__ import annotations

import jax

from hybridc_native.choice import Op

from ..gated_delta_rule import OP as GATED
from .naive import delta_rule_step, reference

__all__ = ["delta_rule", "delta_rule_step", "reference", "OP"]

OP = Op("delta_rule", __name__, {"reference": "naive:reference", "chunk": "chunk:chunk_delta_rule",
                                 "scan_chunk": "chunk:scan_chunk_delta_rule", "cpp": "cpp:delta_rule_cpp"},
        auto=GATED.auto)  # "cpp" on CPU when it builds, else "scan_chunk"


def delta_rule(q, k, v, beta, scale=None, initial_state=None, output_final_state=False, *, impl="auto",
               chunk_size=None):
    """Delta rule over a sequence, as fla's ``chunk_delta_rule`` (without in-kernel l2norm).

    q, k (B, T, H, K); v (B, T, H, V); beta (B, T, H); scale defaults to K**-0.5;
    initial_state (B, H, K, V) or None. Returns (o (B, T, H, V), final_state (B, H, K, V) or None).
    impl: "auto" (CPU: "cpp", else "scan_chunk": scan forward, chunked backward), "reference", "chunk",
    "scan_chunk" or "cpp"; chunk_size (None = the impl's default) is ignored by the reference and "cpp".
    """
    fn = OP.pick(impl, jax.default_backend())
    extra = {} if chunk_size is None or fn is reference else {"chunk_size": chunk_size}
    return fn(q, k, v, beta, scale=scale, initial_state=initial_state, output_final_state=output_final_state,
              **extra)
