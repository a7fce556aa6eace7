"""The gated group RMSNorm of Mamba-2's output (mamba_ssm's ``RMSNormGated``, mamba_ssm/ops/triton/layernorm_gated.py;
transformers' ``MambaRMSNormGated``), computed in fp32:

    norm_before_gate=False:  out = weight * rmsnorm_groupwise(y * silu(z))
    norm_before_gate=True:   out = weight * rmsnorm_groupwise(y) * silu(z)
    weight None (no norm):   out = y * silu(z)

rmsnorm_groupwise normalises each group of `group_size` channels by (mean of squares + eps)^-1/2.

Implementations: ``naive.py`` (``impl="reference"``, the torch expression; what ``auto`` picks off CPU); ``cpp.py``
(``impl="cpp"``, what ``auto`` picks on CPU when the C++ kernels build: one fused pass forward, one backward,
benchmarks/RESULTS.md "Issue 16, session 7").

Glossary of dimension letters:
    E: channels (the norm's width)    G: groups (E / group_size)
"""
from __future__ import annotations

import torch
from hybridc_native.choice import Op

from .. import _cpp_library
from .naive import reference

__all__ = ["rms_norm_gated", "reference", "OP"]


def _auto(device: str) -> str:
    """CPU: "cpp" when the C++ kernels build; elsewhere the reference (torch's elementwise ops)."""
    return "cpp" if device == "cpu" and _cpp_library.available() else "reference"


OP = Op("rms_norm_gated", __name__, {"reference": "naive:reference", "cpp": "cpp:rms_norm_gated_cpp"}, auto=_auto)


def rms_norm_gated(y, z, weight, group_size: int, eps: float, norm_before_gate: bool = False, *, impl="auto"):
    """y, z (..., E); weight (E,) or None (the gate alone). Returns (..., E) in y.dtype."""
    if impl == "auto" and torch.compiler.is_compiling():  # under torch.compile: the expression, which inductor
        return reference(y, z, weight, group_size, eps, norm_before_gate)  # fuses (the C++ op splits the graph)
    return OP.pick(impl, y.device.type)(y, z, weight, group_size, eps, norm_before_gate)
