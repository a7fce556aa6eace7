"""A Hugging Face checkpoint directory: its `config.json` and its safetensors files, read lazily.

The safetensors format is an 8-byte little-endian header length, a JSON header (per tensor: dtype, shape,
data_offsets into the data section) and the data. Every header is read and checked before any tensor data is
touched: a missing shard named in the index, a truncated file, a tensor listed twice or a header that does not
parse is an error naming the file. Tensors are then read one at a time from memory-mapped files (numpy views,
no copy); bf16 arrives as its uint16 bits with the dtype tag "BF16" (numpy has no bfloat16): each framework views
or widens it (`as_float32` here, `torch.bfloat16` / `ml_dtypes.bfloat16` in the backends).
"""
from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

from ..errors import HybridcError

NUMPY = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2", "I64": "<i8", "I32": "<i4", "I16": "<i2",
         "I8": "i1", "U8": "u1", "BOOL": "?"}
ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}
DTYPE_NAMES = {"fp32": "F32", "float32": "F32", "bf16": "BF16", "bfloat16": "BF16", "fp16": "F16", "float16": "F16"}


@dataclass(frozen=True)
class Entry:
    name: str
    file: Path
    dtype: str  # safetensors' tag: F32, BF16, ...
    shape: tuple[int, ...]
    start: int  # absolute byte offsets in the file
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.start


def _bad(path: Path, why: str) -> HybridcError:
    return HybridcError(f"not a valid safetensors file: {why}", source_name=str(path))


def read_header(path: Path) -> dict[str, Entry]:
    """The tensors a safetensors file holds, checked against the file's size (a truncated file is caught here)."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            raw = f.read(8)
            if len(raw) < 8:
                raise _bad(path, f"{size} bytes, shorter than the 8-byte header length")
            (n,) = struct.unpack("<Q", raw)
            if n > size - 8 or n > 100_000_000:
                raise _bad(path, f"header length {n} but the file has {size} bytes")
            header = json.loads(f.read(n))
    except OSError as e:
        raise HybridcError(f"cannot read {path}: {e.strerror}", source_name=str(path)) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise _bad(path, f"the header is not JSON ({e})") from None
    if not isinstance(header, dict):
        raise _bad(path, "the header is not a JSON object")
    out, base = {}, 8 + n
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (a, b) = info["dtype"], tuple(int(s) for s in info["shape"]), info["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise _bad(path, f"tensor {name}: malformed header entry {info!r}") from None
        if dtype not in NUMPY:
            raise _bad(path, f"tensor {name}: dtype {dtype} is not supported (supported: {', '.join(NUMPY)})")
        count = 1
        for s in shape:
            count *= s
        if b - a != count * ITEMSIZE[dtype] or a < 0:
            raise _bad(path, f"tensor {name}: {b - a} bytes for shape {shape} {dtype}")
        if base + b > size:
            raise _bad(path, f"tensor {name} ends at byte {base + b} but the file has {size} bytes (truncated?)")
        out[name] = Entry(name, path, dtype, shape, base + a, base + b)
    return out


class Checkpoint:
    """A checkpoint directory (or a `config.json` beside its weights): config and tensor entries, read lazily."""

    def __init__(self, path):
        p = Path(path)
        if p.is_dir():
            self.dir, self.config_path = p, p / "config.json"
        else:
            self.dir, self.config_path = p.parent, p
        if not self.config_path.is_file():
            raise HybridcError(f"no config.json in {self.dir}" if p.is_dir() else f"no such file: {p}",
                               source_name=str(p), hint="a Hugging Face checkpoint directory holds config.json")
        try:
            self.config_text = self.config_path.read_text()
            self.config = json.loads(self.config_text)
        except json.JSONDecodeError as e:
            raise HybridcError(f"config.json is not valid JSON: {e.msg}", source_name=str(self.config_path)) from None
        except OSError as e:
            raise HybridcError(f"cannot read {self.config_path}: {e.strerror}", source_name=str(self.config_path)) from None
        if not isinstance(self.config, dict):
            raise HybridcError("config.json is not a JSON object", source_name=str(self.config_path))
        self._entries: dict[str, Entry] | None = None

    # -- weights -----------------------------------------------------------------------------------------------
    def files(self) -> list[Path]:
        """The safetensors files, every one checked to exist (an index's shards, or model.safetensors)."""
        index = self.dir / "model.safetensors.index.json"
        single = self.dir / "model.safetensors"
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (json.JSONDecodeError, KeyError, TypeError):
                raise HybridcError("not a valid safetensors index (no weight_map)", source_name=str(index)) from None
            names = sorted(set(weight_map.values()))
            for shard in names:
                if not (self.dir / shard).is_file():
                    raise HybridcError(f"shard {shard} named in the index is missing", source_name=str(index))
            self._index = {k: self.dir / v for k, v in weight_map.items()}
            return [self.dir / s for s in names]
        if single.is_file():
            self._index = None
            return [single]
        found = sorted(x.name for x in self.dir.glob("*.safetensors"))
        raise HybridcError(f"no model.safetensors or model.safetensors.index.json in {self.dir}",
                           source_name=str(self.dir), hint=f"found: {', '.join(found)}" if found else
                           "a checkpoint written by save_pretrained holds its weights in safetensors")

    def entries(self) -> dict[str, Entry]:
        if self._entries is None:
            out: dict[str, Entry] = {}
            for f in self.files():
                for name, e in read_header(f).items():
                    if name in out:
                        raise HybridcError(f"tensor {name} is in both {out[name].file.name} and {f.name}",
                                           source_name=str(self.dir))
                    out[name] = e
            if self._index is not None:
                for name, f in self._index.items():
                    if name not in out:
                        raise HybridcError(f"tensor {name}: the index names {f.name}, which does not hold it",
                                           source_name=str(f))
                    if out[name].file != f:
                        raise HybridcError(f"tensor {name}: the index names {f.name}, it is in {out[name].file.name}",
                                           source_name=str(f))
            self._entries = out
        return self._entries

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {k: e.shape for k, e in self.entries().items()}

    def where(self) -> dict[str, str]:
        return {k: str(e.file) for k, e in self.entries().items()}

    def dtype(self) -> str:
        """The floating dtype holding most of the checkpoint's bytes (F32, BF16 or F16)."""
        by: dict[str, int] = {}
        for e in self.entries().values():
            if e.dtype in ("F32", "BF16", "F16", "F64"):
                by[e.dtype] = by.get(e.dtype, 0) + e.nbytes
        return max(by, key=by.get) if by else "F32"

    def nbytes(self) -> int:
        return sum(e.nbytes for e in self.entries().values())

    def read(self, name: str):
        """(numpy array, dtype tag): a read-only memory map of this tensor alone (bf16 as uint16 bits). Each tensor
        gets its own map, released with the array: the file's pages do not pile up in the process while loading."""
        import numpy as np

        e = self.entries()[name]
        if 0 in e.shape:
            return np.zeros(e.shape, dtype=NUMPY[e.dtype]), e.dtype
        arr = np.memmap(e.file, dtype=NUMPY[e.dtype], mode="r", offset=e.start, shape=e.shape or (1,))
        return (arr if e.shape else arr.reshape(())), e.dtype


def as_float32(arr, dtype: str):
    """A checkpoint array as numpy float32 (bf16 bits widened exactly)."""
    import numpy as np

    if dtype == "BF16":
        return (arr.astype(np.uint32) << 16).view(np.float32)
    return np.asarray(arr, dtype=np.float32)


def write_safetensors(tensors: dict, path: Path, metadata: dict | None = None) -> None:
    """numpy arrays (or (uint16 bits, "BF16") pairs) -> a safetensors file, written atomically (temp then rename)."""
    import numpy as np

    tags = {np.dtype("<f8"): "F64", np.dtype("<f4"): "F32", np.dtype("<f2"): "F16", np.dtype("<i8"): "I64",
            np.dtype("<i4"): "I32", np.dtype("bool"): "BOOL", np.dtype("u1"): "U8", np.dtype("i1"): "I8"}
    header, arrays, off = {}, [], 0
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    for name in sorted(tensors):
        v = tensors[name]
        arr, tag = (v if isinstance(v, tuple) else (np.ascontiguousarray(v), None))
        arr = np.ascontiguousarray(arr)
        tag = tag or tags[arr.dtype.newbyteorder("<") if arr.dtype.byteorder == ">" else arr.dtype]
        header[name] = {"dtype": tag, "shape": list(arr.shape), "data_offsets": [off, off + arr.nbytes]}
        arrays.append(arr)
        off += arr.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for arr in arrays:
            f.write(arr.reshape(-1).view(np.uint8).data)
    tmp.replace(path)
