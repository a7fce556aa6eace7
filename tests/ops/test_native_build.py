"""hybridc_native's build cache key: an edit to any source that scan_kernels.cpp includes (a recurrence, the shared
header, a new file) must rebuild. Compiles nothing: a temporary copy of csrc/ stands in for hybridc_native.CSRC."""
from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

import hybridc_native as native

INCLUDED = ["selective_scan.cpp", "linear_recurrence.cpp", "delta_rule.cpp", "vec_math.h"]


@pytest.fixture
def csrc(tmp_path, monkeypatch):
    copy = tmp_path / "csrc"
    shutil.copytree(native.CSRC, copy)
    monkeypatch.setattr(native, "CSRC", copy)
    return copy


def _key(csrc) -> str:
    return native.cache_key(csrc / "scan_kernels.cpp", native.FLAGS, (), "g++ 12")


def test_the_split_sources_are_in_csrc():
    names = {p.name for p in native.CSRC.iterdir()}
    assert {"scan_kernels.cpp", *INCLUDED} <= names
    unity = (native.CSRC / "scan_kernels.cpp").read_text()
    for name in INCLUDED[:3]:
        assert f'#include "{name}"' in unity


def test_key_is_stable(csrc):
    assert _key(csrc) == _key(csrc)


@pytest.mark.parametrize("name", INCLUDED)
def test_key_changes_when_an_included_source_changes(csrc, name):
    before = _key(csrc)
    with open(csrc / name, "a") as f:
        f.write("\n// edited\n")
    assert _key(csrc) != before


def test_key_changes_when_a_header_is_added(csrc):
    before = _key(csrc)
    (csrc / "new_math.h").write_text("#pragma once\n")
    assert _key(csrc) != before


def test_key_changes_when_a_source_is_renamed(csrc):
    before = _key(csrc)
    (csrc / "delta_rule.cpp").rename(csrc / "gated_delta_rule.cpp")
    assert _key(csrc) != before


def test_key_changes_with_depends_and_flags(csrc, tmp_path):
    extra = tmp_path / "binding.cpp"
    extra.write_text("// binding\n")
    base = _key(csrc)
    with_dep = native.cache_key(csrc / "scan_kernels.cpp", native.FLAGS, (extra,), "g++ 12")
    assert with_dep != base
    extra.write_text("// binding, edited\n")
    assert native.cache_key(csrc / "scan_kernels.cpp", native.FLAGS, (extra,), "g++ 12") != with_dep
    assert native.cache_key(csrc / "scan_kernels.cpp", (*native.FLAGS, "-DX"), (), "g++ 12") != base
    assert native.cache_key(csrc / "scan_kernels.cpp", native.FLAGS, (), "g++ 13") != base


def test_build_uses_the_key(csrc, tmp_path, monkeypatch):
    # a library already cached under the key is returned as is: `build` runs the "compiler" only for --version
    monkeypatch.setattr(native, "cache_dir", lambda: tmp_path / "cache")
    monkeypatch.setattr(native, "compiler", lambda: sys.executable)
    version = subprocess.run([sys.executable, "--version"], capture_output=True, text=True).stdout
    key = native.cache_key(csrc / "scan_kernels.cpp", list(native.FLAGS), (), version)
    cached = tmp_path / "cache" / f"kernels_{key}.so"
    cached.parent.mkdir()
    cached.write_bytes(b"")
    assert native.build("kernels", csrc / "scan_kernels.cpp") == cached
