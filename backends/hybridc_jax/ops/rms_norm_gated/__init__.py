"""The gated group RMSNorm of Mamba-2's output (mamba_ssm's ``RMSNormGated``), in JAX, computed in fp32. Mirrors
hybridc_torch/ops/rms_norm_gated/.

    norm_before_gate=False:  out = weight * rmsnorm_groupwise(y * silu(z))
    norm_before_gate=True:   out = weight * rmsnorm_groupwise(y) * silu(z)
    weight None (no norm):   out = y * silu(z)

Implementations: ``naive.py`` (``impl="reference"``, the jnp expression; what ``auto`` picks off CPU); ``cpp.py``
(``impl="cpp"``, what ``auto`` picks on CPU when it builds: the fused C++ kernel as an XLA custom call).

Glossary of dimension letters:
    E: channels (the norm's width)    G: groups (E / group_size)
"""
from __future__ import annotations

import jax

from hybridc_native.choice import Op

from .._ffi_library import available
from .naive import reference

__all__ = ["rms_norm_gated", "reference", "OP"]


def _auto(device: str) -> str:
    """CPU: the C++ kernel when it builds; elsewhere the reference."""
    return "cpp" if device == "cpu" and available() else "reference"


OP = Op("rms_norm_gated", __name__, {"reference": "naive:reference", "cpp": "cpp:rms_norm_gated_cpp"}, auto=_auto)


def rms_norm_gated(y, z, weight, group_size: int, eps: float, norm_before_gate: bool = False, *, impl="auto"):
    """y, z (..., E); weight (E,) or None (the gate alone). Returns (..., E) in y.dtype."""
    return OP.pick(impl, jax.default_backend())(y, z, weight, group_size, eps, norm_before_gate)
