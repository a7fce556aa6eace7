"""The causal depthwise conv1d over time with bias and an optional silu, time-major: Mamba-2's conv over its xBC
channels (mamba_ssm's ``causal_conv1d_fn(x, weight, bias, activation="silu")``, Dao-AILab/causal-conv1d).

    u_t = bias + sum_{j<K} weight[:, j] * x_{t-K+1+j}        # the K-1 inputs before t = 0 from conv_state (else 0)
    y_t = silu(u_t)  (activation="silu")  or  u_t

Implementations: ``naive.py`` (``impl="reference"``: F.conv1d on the channel-major layout, then silu; what ``auto``
picks off CPU, so the GPU path is the torch one); ``cpp.py`` (``impl="cpp"``, what ``auto`` picks on CPU when the C++
kernels build: one fused pass forward and one backward that read x in place, benchmarks/RESULTS.md "Issue 16,
session 7"). The decoding step stays in ``hybridc_torch/layers/_conv.py`` (``causal_conv1d_step``).

Glossary of dimension letters:
    B: batch    L: sequence length    C: channels    K: conv width
"""
from __future__ import annotations

import torch
from hybridc_native.choice import Op

from .. import _cpp_library
from .naive import reference

__all__ = ["causal_conv1d", "reference", "OP"]


def _auto(device: str) -> str:
    """CPU: "cpp" when the C++ kernels build (measured faster than the reference at the Mamba-2 layer's shapes);
    elsewhere the reference (torch's own conv)."""
    return "cpp" if device == "cpu" and _cpp_library.available() else "reference"


OP = Op("causal_conv1d", __name__, {"reference": "naive:reference", "cpp": "cpp:causal_conv1d_cpp"}, auto=_auto)


def causal_conv1d(x, weight, bias=None, conv_state=None, activation=None, *, impl="auto"):
    """x (B, L, C) (any strides); weight (C, K); bias (C,) or None; conv_state (B, C, K-1) or None (zeros);
    activation None or "silu". Returns (y (B, L, C) in x.dtype, new conv_state (B, C, K-1): the last K-1 inputs)."""
    if activation not in (None, "silu"):
        raise ValueError(f"causal_conv1d: activation must be None or 'silu', not {activation!r}")
    if impl == "auto" and torch.compiler.is_compiling():  # under torch.compile: torch's conv (no graph break)
        return reference(x, weight, bias, conv_state, activation)
    return OP.pick(impl, x.device.type)(x, weight, bias, conv_state, activation)
