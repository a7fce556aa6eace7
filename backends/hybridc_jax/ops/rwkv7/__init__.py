"""RWKV-7's generalized delta rule (diagonal-plus-low-rank state transition), in JAX.

Paper: Peng et al., "RWKV-7 "Goose" with Expressive Dynamic State Evolution" (2025, arXiv:2503.14456).
Reference implementation: flash-linear-attention, ``fla.ops.rwkv7`` (``chunk_rwkv7`` / ``fused_recurrent_rwkv7``
signature, [B, T, H, K] layout, state stored (K, V)) and ``fla/ops/generalized_delta_rule/dplr/naive.py``
(``dplr_recurrence``) for the math. Mirrors hybridc_torch/ops/rwkv7/.

Per head, with state S (K, V), log decay w_t (K,) and one step t (a^T S uses the state *before* the decay):
    S_t = exp(w_t)[:, None] * S_{t-1} + b_t (a_t^T S_{t-1}) + k_t v_t^T      # (K, V)
    o_t = S_t^T (scale * r_t)                                                 # (V,)
(In RWKV's own (V, K) layout this reads S = S diag(exp(w)) + (S a) b^T + v k^T.)  RWKV-7 uses a = -kk, b = kk * a_gate.

Implementations: ``naive.py`` (``impl="reference"``, a ``lax.scan`` over time, and the decoding step); ``chunk.py``
(``impl="chunk"``, the chunked form ``chunk_rwkv7``: chunk 16, an exact pairwise fallback past the fp32 overflow
bound, ``lax.scan`` over chunks; and ``impl="scan_chunk"``, what ``auto`` picks: the reference's forward when not
differentiated, the chunked form under ``jax.grad``).

Dimension glossary:
    B batch, T time (sequence length), H heads, K key/receptance head dim, V value head dim.
"""
from __future__ import annotations

import jax

from hybridc_native.choice import Op

from .naive import reference, rwkv7_step

__all__ = ["rwkv7", "rwkv7_step", "reference", "OP"]


def _auto(device: str) -> str:
    """The scan forward with the chunked backward on every device for now (GPU-specific choices come later)."""
    return "scan_chunk"


OP = Op("rwkv7", __name__, {"reference": "naive:reference", "chunk": "chunk:chunk_rwkv7",
                            "scan_chunk": "chunk:scan_chunk_rwkv7"}, auto=_auto)


def rwkv7(r, w, k, v, a, b, scale=1.0, initial_state=None, output_final_state=False, *, impl="auto",
          chunk_size=None):
    """RWKV-7 generalized delta rule over a sequence, as fla's ``chunk_rwkv7`` (w = log decay, state (K, V)).

    r, w, k, a, b (B, T, H, K); v (B, T, H, V); scale 1.0 (None means K**-0.5);
    initial_state (B, H, K, V) or None. Returns (o (B, T, H, V), final_state (B, H, K, V) or None).
    impl: "auto" ("scan_chunk": scan forward, chunked backward), "reference", "chunk" or "scan_chunk"; chunk_size
    (None = the impl's default) is ignored by the reference.
    """
    fn = OP.pick(impl, jax.default_backend())
    extra = {} if chunk_size is None or fn is reference else {"chunk_size": chunk_size}
    return fn(r, w, k, v, a, b, scale=scale, initial_state=initial_state, output_final_state=output_final_state,
              **extra)
