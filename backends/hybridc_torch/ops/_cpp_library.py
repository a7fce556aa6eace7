"""The C++ CPU kernels library (``hybridc_native/csrc/scan_kernels.cpp``: selective scan, linear recurrence, (gated)
delta rule, SSD, the fused Mamba decoding steps), compiled on first use and loaded through ctypes. Shared with the
JAX backend's XLA custom calls (the same sources); each op's ``cpp.py`` wraps its entry points in an autograd
Function (the decoding steps: ``ops/decode_step.py``).

Build: plain C++ without torch headers (compiles in ~5-8 s with g++ 12, once), ``-O3 -march=native``, by
`hybridc_native.build` (cached, keyed by source, flags, compiler and CPU; safe under concurrent first use). Set
``HYBRIDC_DISABLE_CPP=1`` to skip it. Any failure (no compiler, compile error, load error) returns None from
`load()` with one warning; ``impl="auto"`` then falls back (the reference for the selective scan, the chunked torch
forms for the linear recurrence and the delta rules).
"""

from __future__ import annotations

import ctypes

import torch

import hybridc_native as native

__all__ = ["load", "available", "ptr", "dtype_code", "CHECKPOINT_EVERY", "DELTA_CHECKPOINT_EVERY"]

_SRC = native.CSRC / "scan_kernels.cpp"
CHECKPOINT_EVERY = 64  # K: the selective scan's forward stores the state every K steps for the backward's recomputation
ABI = 7
DELTA_CHECKPOINT_EVERY = 16  # the delta rule's backward recomputes chunks of this many steps ([K, V] states each)


def _build(extra_flags: tuple[str, ...] = ()) -> ctypes.CDLL:
    """Compile (or reuse from the cache) and load the library; `extra_flags` (appended) build variants for tests,
    e.g. ("-march=x86-64",) for the portable no-AVX code or ("-DHYBRIDC_VBYTES=64",) for 16 fp32 lanes."""
    lib = ctypes.CDLL(str(native.build("hybridc_scan_kernels", _SRC, (*native.FLAGS, *extra_flags))))
    if lib.hybridc_ss_abi_version() != ABI:
        raise RuntimeError("selective scan kernel ABI mismatch")
    vp, i64, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    lib.hybridc_ss_lanes.argtypes = [i32]
    lib.hybridc_ss_lanes.restype = i32
    lib.hybridc_ss_forward.argtypes = [i32, i32, i32] + [vp] * 12 + [i64] * 7
    lib.hybridc_ss_forward.restype = None
    lib.hybridc_ss_backward.argtypes = [i32, i32, i32] + [vp] * 20 + [i64] * 7
    lib.hybridc_ss_backward.restype = None
    lib.hybridc_lr_forward.argtypes = [i32, i32] + [vp] * 4 + [i64] * 3
    lib.hybridc_lr_forward.restype = None
    lib.hybridc_lr_backward.argtypes = [i32, i32] + [vp] * 7 + [i64] * 3
    lib.hybridc_lr_backward.restype = None
    lib.hybridc_dr_forward.argtypes = [i32, i32] + [vp] * 9 + [i64] * 6 + [ctypes.c_double]
    lib.hybridc_dr_forward.restype = None
    lib.hybridc_dr_backward.argtypes = [i32, i32] + [vp] * 14 + [i64] * 6 + [ctypes.c_double]
    lib.hybridc_dr_backward.restype = None
    lib.hybridc_ssd_block.argtypes = [i32, i64]
    lib.hybridc_ssd_block.restype = i32
    lib.hybridc_ssd_forward.argtypes = [i32, i32, i32] + [vp] * 11 + [i64] * 8 + [vp]
    lib.hybridc_ssd_forward.restype = None
    lib.hybridc_ssd_backward.argtypes = [i32, i32, i32] + [vp] * 17 + [i64] * 8 + [vp]
    lib.hybridc_ssd_backward.restype = None
    f64 = ctypes.c_double  # the Mamba-2 layer's fused conv + silu and gated norm (ops/causal_conv1d, rms_norm_gated)
    lib.hybridc_conv_kmax.restype = lib.hybridc_conv_rows.restype = i32
    lib.hybridc_conv_forward.argtypes = [i32, i32, i32] + [vp] * 5 + [i64] * 6
    lib.hybridc_conv_forward.restype = None
    lib.hybridc_conv_backward.argtypes = [i32, i32, i32] + [vp] * 8 + [i64] * 8
    lib.hybridc_conv_backward.restype = None
    lib.hybridc_gnorm_forward.argtypes = [i32, i32, i32] + [vp] * 4 + [i64] * 3 + [f64] + [i64] * 3
    lib.hybridc_gnorm_forward.restype = None
    lib.hybridc_gnorm_backward.argtypes = [i32, i32, i32] + [vp] * 7 + [i64] * 3 + [f64] + [i64] * 4
    lib.hybridc_gnorm_backward.restype = None
    # the fused decoding steps (decode_step.cpp; ops/decode_step.py)
    proj = [vp] * 6 + [i64]  # the optional in/out projections (x, in_w, in_b, out_w, out_b, out, D)
    lib.hybridc_step_mamba.argtypes = [vp, i64] + [vp] * 6 + [i32] + [vp] * 3 + [f64] + [vp] * 4 + [i64] * 5 + proj
    lib.hybridc_step_mamba.restype = None
    lib.hybridc_step_mamba2.argtypes = [vp, i64] + [vp] * 4 + [f64, f64] + [vp] * 3 + [i64, f64, i32] + [vp] * 2 \
        + [i64] * 6 + proj
    lib.hybridc_step_mamba2.restype = None
    return lib


_LOADER = native.LazyLibrary(lambda: _build(), "impl='auto' falls back to the reference (selective scan) and "
                                                "the chunked torch scan (linear recurrence)")


def load():
    """The compiled library, or None (with one warning) if it cannot be built or loaded here."""
    return _LOADER.load()


def available() -> bool:
    return load() is not None


def ptr(t):
    """A tensor's data pointer for the C ABI (None for an absent optional tensor)."""
    return None if t is None else t.data_ptr()


def dtype_code(t) -> int:
    """The kernels' dtype code: 0 float32, 1 float64."""
    return 0 if t.dtype == torch.float32 else 1
