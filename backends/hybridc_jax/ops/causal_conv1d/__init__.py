"""The causal depthwise conv1d over time with bias and an optional silu, time-major, in JAX: Mamba-2's conv over its
xBC channels (mamba_ssm's ``causal_conv1d_fn(..., activation="silu")``). Mirrors hybridc_torch/ops/causal_conv1d/.

    u_t = bias + sum_{j<K} weight[:, j] * x_{t-K+1+j}        # the K-1 inputs before t = 0 from conv_state (else 0)
    y_t = silu(u_t)  (activation="silu")  or  u_t

Implementations: ``naive.py`` (``impl="reference"``: K shifted multiply-adds, then silu; what ``auto`` picks off CPU
or without a compiler); ``cpp.py`` (``impl="cpp"``, what ``auto`` picks on CPU: torch's fused C++ kernel as an XLA
custom call with a custom VJP).

Glossary of dimension letters:
    B: batch    L: sequence length    C: channels    K: conv width
"""
from __future__ import annotations

import jax

from hybridc_native.choice import Op

from .._ffi_library import available
from .naive import reference

__all__ = ["causal_conv1d", "reference", "OP"]


def _auto(device: str) -> str:
    """CPU: the C++ kernel when it builds; elsewhere the reference (XLA fuses its elementwise work)."""
    return "cpp" if device == "cpu" and available() else "reference"


OP = Op("causal_conv1d", __name__, {"reference": "naive:reference", "cpp": "cpp:causal_conv1d_cpp"}, auto=_auto)


def causal_conv1d(x, weight, bias=None, conv_state=None, activation=None, *, impl="auto"):
    """x (B, L, C); weight (C, K); bias (C,) or None; conv_state (B, C, K-1) or None (zeros); activation None or
    "silu". Returns (y (B, L, C) in x.dtype, new conv_state (B, C, K-1): the last K-1 inputs)."""
    if activation not in (None, "silu"):
        raise ValueError(f"causal_conv1d: activation must be None or 'silu', not {activation!r}")
    return OP.pick(impl, jax.default_backend())(x, weight, bias, conv_state, activation)
