"""`hybridc.load_weights` on files that are not weights: a located HybridcError naming the file, never a raw error."""
from __future__ import annotations

import pytest

import hybridc

pytest.importorskip("safetensors")


@pytest.mark.parametrize("content", [b"garbage", b"", b"\xff" * 64, b"\x08\x00\x00\x00\x00\x00\x00\x00{\"a\":1}"],
                         ids=["text", "empty", "binary", "bad-header"])
@pytest.mark.parametrize("target", ["numpy", "jax", "torch"])
def test_a_corrupt_file_is_a_hybridc_error(tmp_path, content, target):
    path = tmp_path / "w.safetensors"
    path.write_bytes(content)
    if target == "torch":
        pytest.importorskip("torch")
        target = hybridc.build("layers mamba attn; dim 16; attn heads=2 head_dim=8", backend="torch")
    with pytest.raises(hybridc.HybridcError) as e:
        hybridc.load_weights(target, path)
    assert str(path) in str(e.value) and "not a valid safetensors file" in str(e.value)


def test_a_missing_file_names_it(tmp_path):
    with pytest.raises(hybridc.HybridcError, match="no such weights file"):
        hybridc.load_weights("numpy", tmp_path / "absent.safetensors")
