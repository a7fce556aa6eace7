"""The Python API: `load`, `load_file`, `dumps`, `describe`, `build`, `backends`."""
from __future__ import annotations

from pathlib import Path
from typing import Union

from . import registry as _backends
from .canonical import dumps
from .summary import describe as _describe
from .errors import HybridcError
from .ir import Model
from .resolve import load


def load_file(path: Union[str, Path]) -> Model:
    """Read and resolve a `.hyb` file; errors name the file."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise HybridcError(f"cannot read {p}: {e.strerror}", source_name=str(p)) from None
    return load(text, str(p))


def _model(model_or_text: Union[Model, str]) -> Model:
    return model_or_text if isinstance(model_or_text, Model) else load(model_or_text)


def describe(model_or_text: Union[Model, str], *, context: int = 4096, dtype: str = "fp32") -> dict:
    """Schedule, parameters, inference state at `context`, FLOPs per token (see `hybridc describe`)."""
    return _describe(_model(model_or_text), context=context, dtype=dtype)


def build(model_or_text: Union[Model, str], backend: str = "torch", **options):
    """Lower a model through a backend: an `nn.Module` for torch, an object with `init`/`apply` for jax."""
    return _backends.get(backend).build(_model(model_or_text), **options)


def backends() -> dict[str, bool]:
    """Installed backends: name -> usable here."""
    return _backends.backends()


__all__ = ["load", "load_file", "dumps", "describe", "build", "backends"]
