"""The recurrences the JAX layers run, one folder per op (as fla's ``fla/ops/<op>/``; mirrors hybridc_torch/ops):

    <op>/__init__.py   the entry point (``impl=`` and the device choice, declared once as an `Op`) and the step
    <op>/naive.py      the sequential ``lax.scan`` reference (``impl="reference"``, the oracle) and the decoding step
    <op>/chunk.py      the chunked XLA forms (``impl="chunk"``; ``impl="scan_chunk"``: the scan forward with the
                       chunked form's backward)
    <op>/cpp.py        the fused C++ CPU kernel as an XLA custom call (``impl="cpp"``; the library:
                       ``_ffi_library.py``)
    <op>/pallas.py     the Pallas GPU kernel (``impl="pallas"``; interpret mode on CPU)

Shared: ``_chunk.py`` (the chunked forms' frame, layout, triangular inverse, state pass and the scan_chunk pairing),
``_ffi_library.py`` (build, register and load the XLA FFI binding of the C++ kernels). Not a recurrence:
``grouped_matmul/`` (a mixture of experts' per-expert products: ragged_dot on GPU/TPU, a tiled loop on CPU) and
``attention/`` (causal self-attention's scores, softmax and values: blockwise, skipping masked blocks),
``causal_conv1d/`` and ``rms_norm_gated/`` (the Mamba-2 layer's conv + silu and gated norm: C++ custom calls on CPU).

``from hybridc_jax.ops import selective_scan`` gives the entry callable; `OPS` maps an op name to its `Op` (its
implementations and ``auto``, read by the dispatcher and by ``describe --kernels``). Precedence: an explicit
``impl=``, then ``HYBRIDC_KERNEL``, then ``auto`` for ``jax.default_backend()`` (`hybridc_native.choice`).
"""
from __future__ import annotations

from . import attention as _attention
from . import causal_conv1d as _causal_conv1d
from . import delta_rule as _delta_rule
from . import gated_delta_rule as _gated_delta_rule
from . import grouped_matmul as _grouped_matmul
from . import linear_recurrence as _linear_recurrence
from . import rms_norm_gated as _rms_norm_gated
from . import rwkv7 as _rwkv7
from . import selective_scan as _selective_scan
from . import ssd as _ssd
from .attention import attention
from .causal_conv1d import causal_conv1d
from .delta_rule import delta_rule, delta_rule_step
from .gated_delta_rule import gated_delta_rule, gated_delta_rule_step
from .grouped_matmul import grouped_matmul
from .linear_recurrence import linear_recurrence, linear_recurrence_step
from .rms_norm_gated import rms_norm_gated
from .rwkv7 import rwkv7, rwkv7_step
from .selective_scan import selective_scan, selective_scan_step
from .ssd import ssd, ssd_step

OPS = {mod.OP.name: mod.OP for mod in (_selective_scan, _ssd, _delta_rule, _gated_delta_rule, _rwkv7,
                                       _linear_recurrence, _grouped_matmul, _attention,
                                       _causal_conv1d, _rms_norm_gated)}

__all__ = ["OPS", "causal_conv1d", "rms_norm_gated", "attention", "delta_rule", "delta_rule_step", "gated_delta_rule", "gated_delta_rule_step",
           "grouped_matmul", "linear_recurrence", "linear_recurrence_step", "rwkv7", "rwkv7_step", "selective_scan",
           "selective_scan_step", "ssd", "ssd_step"]
