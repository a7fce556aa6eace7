"""hybridc's native runtime, shared by the torch and JAX backends: the C++ CPU kernels, their builder and cache,
and the kernel choice rules (``hybridc_native.choice``). Stdlib only: neither torch nor jax is imported here, and
the compiler core (``hybridc``) never imports this package.

``csrc/`` (plain C++ with a C ABI, no framework headers):

    selective_scan.cpp     Mamba-1 selective scan (S6), forward and backward        hybridc_ss_*
    linear_recurrence.cpp  RG-LRU diagonal linear recurrence, forward and backward  hybridc_lr_*
    delta_rule.cpp         (gated) delta rule, forward and backward                 hybridc_dr_*
    ssd.cpp                Mamba-2's SSD (scalar-decay state space), forward and backward  hybridc_ssd_*
    causal_conv1d.cpp      causal depthwise conv1d + bias + silu, time-major, forward and backward  hybridc_conv_*
    rms_norm_gated.cpp     Mamba-2's gated group RMSNorm, forward and backward      hybridc_gnorm_*
    decode_step.cpp        fused one-token Mamba-1 / Mamba-2 decoding steps, states in place  hybridc_step_*
    vec_math.h             shared vector types and math (exp, log, softplus, sigmoid), the thread pool run_tasks
    scan_kernels.cpp       the library: one translation unit including the four recurrences (+ the ABI version)

The torch backend builds ``scan_kernels.cpp`` and loads it through ctypes; the JAX backend compiles its XLA FFI
binding (``hybridc_jax/csrc/xla_ffi.cpp``, which includes ``scan_kernels.cpp``) and registers the handlers as XLA
custom calls, so both frameworks run the same machine code.

`build` compiles once and caches: under ``$HYBRIDC_KERNEL_CACHE``, else ``$TORCH_EXTENSIONS_DIR/hybridc``, else
``~/.cache/hybridc/kernels``, keyed by `cache_key`: a hash of the source, every file of ``csrc/`` (so an edit to
an included source rebuilds), the flags, the compiler version and the CPU's flags (a cache shared between machines
never loads a binary built for another CPU). It builds into a temporary file and renames it, so concurrent first
uses are safe.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path

__all__ = ["CSRC", "FLAGS", "LazyLibrary", "build", "cache_dir", "cache_key", "compiler", "disabled", "scan_splits"]

CSRC = Path(__file__).with_name("csrc")
FLAGS = ("-O3", "-march=native", "-fPIC", "-shared", "-fopenmp-simd", "-std=c++17", "-pthread")


def disabled() -> bool:
    """True when ``HYBRIDC_DISABLE_CPP`` is set (to anything but 0): every backend then skips the C++ kernels."""
    return os.environ.get("HYBRIDC_DISABLE_CPP", "") not in ("", "0")


def scan_splits(batch: int, groups: int, blocks_per_group: int, threads: int) -> int:
    """The selective scan kernel's tasks per (batch, group), each a range of channel blocks: enough to keep every
    thread busy (4 tasks per thread), never more than there are blocks."""
    want = -(-4 * max(1, threads) // max(1, batch * groups))
    return max(1, min(blocks_per_group, want))


def cache_dir() -> Path:
    if os.environ.get("HYBRIDC_KERNEL_CACHE"):
        return Path(os.environ["HYBRIDC_KERNEL_CACHE"])
    if os.environ.get("TORCH_EXTENSIONS_DIR"):
        return Path(os.environ["TORCH_EXTENSIONS_DIR"]) / "hybridc"
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "hybridc" / "kernels"


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    import platform
    return platform.machine() + platform.processor()


def compiler() -> str | None:
    for name in (os.environ.get("CXX"), "g++", "c++", "clang++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def cache_key(source: Path, flags=FLAGS, depends=(), compiler_version: str = "") -> str:
    """The build cache's key: a hash of `source`, the files in `depends`, every ``*.cpp`` / ``*.h`` of `CSRC` (by
    name and content: the sources that ``scan_kernels.cpp`` includes), the flags, `compiler_version` and the CPU's
    flags. Reads files, compiles nothing."""
    csrc = sorted(p for p in Path(CSRC).rglob("*") if p.suffix in (".cpp", ".h") and p.is_file())
    parts = [Path(source).read_bytes(), *(Path(d).read_bytes() for d in depends),
             *(part for p in csrc for part in (p.relative_to(CSRC).as_posix().encode(), p.read_bytes())),
             " ".join(flags).encode(), compiler_version.encode(), _cpu_flags().encode()]
    return hashlib.sha256(b"\0".join(parts)).hexdigest()[:16]


def build(name: str, source: Path, flags=FLAGS, include_dirs=(), depends=()) -> Path:
    """Compile `source` (plus the files it includes: every file of `CSRC` and those listed in `depends`) into a
    shared library; return its path.

    Raises RuntimeError when there is no compiler or the compile fails (the message carries the compiler's errors).
    """
    cxx = compiler()
    if cxx is None:
        raise RuntimeError("no C++ compiler found (tried $CXX, g++, c++, clang++)")
    version = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=60).stdout
    flags = [*flags, *(f"-isystem{d}" for d in include_dirs)]
    key = cache_key(source, flags, depends, version)
    out_dir = cache_dir()
    lib_path = out_dir / f"{name}_{key}.so"
    if not lib_path.exists():
        out_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=out_dir)
        os.close(fd)
        try:
            proc = subprocess.run([cxx, *flags, str(source), "-o", tmp], capture_output=True, text=True, timeout=600)
            if proc.returncode != 0:
                raise RuntimeError(f"compiling {Path(source).name} failed:\n{proc.stderr[-4000:]}")
            os.replace(tmp, lib_path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return lib_path


class LazyLibrary:
    """A library built and loaded on first use, once per process (thread-safe); `load()` gives it or None.

    None when ``HYBRIDC_DISABLE_CPP`` is set or the build fails; a failure warns once (RuntimeWarning) with
    `fallback` saying what runs instead. `lib` / `tried` are plain attributes (tests swap in other builds).
    """

    def __init__(self, build, fallback: str):
        self._build, self.fallback = build, fallback
        self.lib, self.tried = None, False
        self._lock = threading.Lock()

    def load(self):
        if self.tried:
            return self.lib
        with self._lock:
            if not self.tried:
                self.lib = None
                if not disabled():
                    try:
                        self.lib = self._build()
                    except Exception as exc:  # noqa: BLE001 -- any failure means "use the fallback"
                        warnings.warn(f"hybridc: the C++ CPU kernels are unavailable ({exc}); {self.fallback}",
                                      RuntimeWarning, stacklevel=4)
                self.tried = True
        return self.lib
