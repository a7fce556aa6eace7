"""The recurrences the torch layers run, one folder per op (as fla's ``fla/ops/<op>/``):

    <op>/__init__.py   the entry point (``impl=`` and the device choice, declared once as an `Op`) and the step
    <op>/naive.py      the sequential reference (``impl="reference"``, the oracle) and the decoding step
    <op>/chunk.py      the chunked torch form (``impl="chunk"``)
    <op>/cpp.py        the fused C++ CPU kernel (``impl="cpp"``; the library: ``_cpp_library.py``)
    <op>/triton.py     the Triton GPU kernels (``impl="triton"``)

Not a recurrence: ``causal_conv1d/`` and ``rms_norm_gated/`` (the Mamba-2 layer's conv + silu and gated norm around
its SSD: fused C++ passes on CPU, the torch expressions elsewhere).

Shared: ``_chunk.py`` (the chunked delta forms' opening, layout, triangular inverse, state pass),
``_cpp_library.py`` (build and load the C++ kernels), ``_triton.py`` (whether triton is installed).

``from hybridc_torch.ops import selective_scan`` gives the entry callable; `OPS` maps an op name to its `Op` (its
implementations and ``auto``, read by the dispatcher and by ``describe --kernels``). Precedence: an explicit
``impl=``, then ``HYBRIDC_KERNEL``, then ``auto`` (`hybridc_native.choice`).
"""
from __future__ import annotations

from . import causal_conv1d as _causal_conv1d
from . import delta_rule as _delta_rule
from . import gated_delta_rule as _gated_delta_rule
from . import linear_recurrence as _linear_recurrence
from . import rms_norm_gated as _rms_norm_gated
from . import rwkv7 as _rwkv7
from . import selective_scan as _selective_scan
from . import ssd as _ssd
from ._triton import triton_available
from .causal_conv1d import causal_conv1d
from .delta_rule import delta_rule, delta_rule_step
from .gated_delta_rule import gated_delta_rule, gated_delta_rule_step
from .linear_recurrence import linear_recurrence, linear_recurrence_step
from .rms_norm_gated import rms_norm_gated
from .rwkv7 import rwkv7, rwkv7_step
from .selective_scan import selective_scan, selective_scan_step
from .ssd import ssd, ssd_step

OPS = {mod.OP.name: mod.OP for mod in (_selective_scan, _ssd, _delta_rule, _gated_delta_rule, _rwkv7,
                                       _linear_recurrence,
                                       _causal_conv1d, _rms_norm_gated)}

__all__ = ["OPS", "causal_conv1d", "rms_norm_gated", "delta_rule", "delta_rule_step", "gated_delta_rule", "gated_delta_rule_step", "linear_recurrence",
           "linear_recurrence_step", "rwkv7", "rwkv7_step", "selective_scan", "selective_scan_step", "ssd", "ssd_step",
           "triton_available"]
