"""The C++ CPU kernels as XLA custom calls: build the XLA FFI binding once, register its handlers, load it lazily.

Why: XLA:CPU cannot fuse a selective scan. Its best form here (``selective_scan.chunk.chunk_selective_scan``) is
2.4-3.5x slower than the fused C++ kernel torch runs (B4 L1024 D512 N16: 57 vs 20 ms forward), because XLA runs the
per-step work of a ``lax.scan`` body as separate small loops on one thread; the linear recurrence's ``lax.scan`` pays
~2 us per step. The kernels of ``hybridc_native/csrc/`` are plain C++; ``hybridc_jax/csrc/xla_ffi.cpp`` wraps them
as typed XLA FFI handlers (the interface jaxlib ships headers for, ``jax.ffi.include_dir()``), built once by
`hybridc_native.build` and registered with ``jax.ffi.register_ffi_target``. They run on XLA's buffers in place (no
host callback, no copies) and are called with ``jax.ffi.ffi_call`` by each op's ``cpp.py`` (selective scan, linear
recurrence, gated delta rule, SSD; the delta rule reuses the gated one), whose gradients are a ``jax.custom_vjp`` over
the kernels' fused reverse scan (recomputing from checkpointed states), exactly as in torch. So the two backends run the
same machine code and agree to rounding.

Contract of every ``cpp.py``: the same as its op's ``reference``. CPU only (the targets are registered for the
"cpu" platform); under ``jax.vmap`` the call loops over the mapped axis (``vmap_method="sequential"``); forward-mode
(``jax.jvp``) is not defined (custom_vjp). ``HYBRIDC_DISABLE_CPP=1`` or a failed build makes `load()` return None
(one warning) and ``auto`` falls back to the XLA forms.
"""
from __future__ import annotations

import ctypes
import os
from importlib import resources
from pathlib import Path

import jax
import jax.numpy as jnp

import hybridc_native as native

__all__ = ["load", "available", "require", "threads", "acc_dtype", "absent", "sds"]

# the XLA FFI binding lives with the JAX backend: <package root>/csrc/xla_ffi.cpp
_SRC = Path(str(resources.files("hybridc_jax") / "csrc" / "xla_ffi.cpp"))
_TARGETS = {"hybridc_ss_forward": "HybridcSsForward", "hybridc_ss_backward": "HybridcSsBackward",
            "hybridc_lr_forward": "HybridcLrForward", "hybridc_lr_backward": "HybridcLrBackward",
            "hybridc_dr_forward": "HybridcDrForward", "hybridc_dr_backward": "HybridcDrBackward",
            "hybridc_ssd_forward": "HybridcSsdForward", "hybridc_ssd_backward": "HybridcSsdBackward",
            "hybridc_conv_forward": "HybridcConvForward", "hybridc_conv_backward": "HybridcConvBackward",
            "hybridc_gnorm_forward": "HybridcNormForward", "hybridc_gnorm_backward": "HybridcNormBackward"}


def _build() -> ctypes.CDLL:
    path = native.build("hybridc_xla_ffi", _SRC, include_dirs=(jax.ffi.include_dir(), str(native.CSRC)),
                        depends=(native.CSRC / "scan_kernels.cpp",))
    lib = ctypes.CDLL(str(path))
    lib.hybridc_ss_lanes.argtypes = [ctypes.c_int]
    lib.hybridc_ss_lanes.restype = ctypes.c_int
    lib.hybridc_ssd_block.argtypes = [ctypes.c_int, ctypes.c_int64]
    lib.hybridc_ssd_block.restype = ctypes.c_int
    lib.hybridc_conv_kmax.restype = lib.hybridc_conv_rows.restype = ctypes.c_int
    for target, symbol in _TARGETS.items():
        jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(lib, symbol)), platform="cpu")
    return lib


_LOADER = native.LazyLibrary(_build, "impl='auto' in JAX falls back to the XLA forms")


def load():
    """The compiled library with its XLA targets registered, or None (with one warning) if it cannot be built here."""
    return _LOADER.load()


def available() -> bool:
    return load() is not None


def require(message: str) -> None:
    """Raise RuntimeError(message) unless the library loads (an explicit impl="cpp" where it cannot be built)."""
    if load() is None:
        raise RuntimeError(message)


def threads() -> int:
    """The CPU threads this process may run on (the kernels' ``nthreads`` attribute)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def acc_dtype(dtype):
    """The kernels' dtype: fp64 for fp64 inputs, else fp32."""
    return jnp.float64 if dtype == jnp.float64 else jnp.float32


def absent(acc):
    """The stand-in for an absent optional operand: a zero-size array (a null pointer in the kernel)."""
    return jnp.zeros((0,), acc)


def sds(shape, dtype):
    return jax.ShapeDtypeStruct(tuple(shape), dtype)
