"""Hugging Face checkpoints in and out: a transformers hybrid's config as `.hyb`, its tensors into torch or JAX, and
a hybridc model back as a checkpoint transformers loads.

One module per family in `hybridc/hf/families/` (listed in `FAMILIES`, by transformers' `model_type`), each with:

- `HF_CLASS`: transformers' causal-LM class name; `IGNORED`: {config field: why it does not change the computation};
- `to_hyb(cfg: HFConfig) -> str`: the `.hyb` program (every field read, checked or refused with a located error);
- `tensors(cfg: HFConfig, model: Model, ours: list[str]) -> list[Map]`: every tensor conversion for that config
  (`convert.py`); `ours` are hybridc's tensor names for the model (the structure comes from `model`, the names of
  each layer's parameters from `ours`);
- optionally `UNUSED_TENSORS`: regexes of checkpoint tensors transformers does not load either (not read);
- `to_config(model: Model) -> dict`: config.json for a model of this family, raising `NotExpressible` naming the
  part that has no equivalent (export; `save_hf` then checks `to_hyb(to_config(m)) == m`).

The core imports neither torch nor jax: checkpoints are read by `checkpoint.py` (memory-mapped, one tensor at a
time); the framework side of loading and saving is `backends/hybridc_{torch,jax}/hf.py`.
"""
from __future__ import annotations

import importlib
import json
import re
from pathlib import Path

from ..errors import HybridcError, suggest

# transformers' model_type -> module name in hybridc.hf.families
FAMILIES = {
    "mamba": "mamba",
    "falcon_mamba": "falcon_mamba",
    "mamba2": "mamba2",
    "nemotron_h": "nemotron_h",
    "bamba": "bamba",
    "falcon_h1": "falcon_h1",
    "jamba": "jamba",
    "zamba": "zamba",
    "zamba2": "zamba2",
    "recurrent_gemma": "recurrent_gemma",
    "qwen3_next": "qwen3_next",
    "granitemoehybrid": "granite_moe_hybrid",
    "lfm2": "lfm2",
}

# the layer kinds (mixers; `a+b` a parallel block) each family can hold: export looks only where the kinds fit
LAYER_KINDS = {
    "mamba": {"mamba"}, "falcon_mamba": {"mamba"}, "mamba2": {"mamba2"}, "nemotron_h": {"mamba2", "attn", "mlp", "moe"},
    "bamba": {"mamba2", "attn"}, "falcon_h1": {"attn+mamba2", "mamba2+attn"}, "jamba": {"mamba", "attn"},
    "zamba": {"mamba", "attn"}, "zamba2": {"mamba2", "attn"}, "recurrent_gemma": {"griffin_lru", "attn"},
    "qwen3_next": {"gated_delta_net", "attn"}, "granitemoehybrid": {"mamba2", "attn"}, "lfm2": {"short_conv", "attn"},
}


class NotExpressible(Exception):
    """A family cannot express a model (export): the message names the part (`layer 3 (rwkv): ...`)."""


def family(model_type: str, *, cfg=None):
    """The family module for a transformers `model_type`."""
    if model_type not in FAMILIES:
        msg = f"model_type {model_type!r}: hybridc has no importer for this family"
        hint = suggest(model_type, FAMILIES) or f"families: {', '.join(FAMILIES)}"
        if cfg is not None:
            cfg.fail("model_type", "hybridc has no importer for this family", hint=hint)
        raise HybridcError(msg, hint=hint)
    return importlib.import_module(f"{__name__}.families.{FAMILIES[model_type]}")


def header(fam) -> str:
    return f"# transformers {fam.HF_CLASS} (model_type {fam.MODEL_TYPE}), imported by hybridc import-hf\n"


def _read(ck):
    """(HFConfig, family module, Model) of a Checkpoint."""
    from ..resolve import load
    from .config import HFConfig

    cfg = HFConfig(ck.config, text=ck.config_text, source_name=str(ck.config_path))
    mt = cfg.get("model_type", None)
    if mt is None:
        raise HybridcError("config.json has no model_type", source_name=str(ck.config_path),
                           hint=f"families: {', '.join(FAMILIES)}")
    fam = family(mt, cfg=cfg)
    archs = cfg.get("architectures", None)
    if archs is not None and archs != [fam.HF_CLASS]:
        cfg.fail("architectures", f"hybridc imports {fam.HF_CLASS} for model_type {mt}")
    text = f"model {fam.MODEL_TYPE}\n" + fam.to_hyb(cfg)  # the name records the family (export prefers it)
    cfg.finish(fam.IGNORED)
    try:
        model = load(text, f"<{fam.MODEL_TYPE} import>")
    except HybridcError as e:  # values the family module passed on that hybridc's checks refuse (e.g. a width of 0)
        raise HybridcError(f"the config's values make an invalid hybridc model:\n{e}",
                           source_name=str(ck.config_path),
                           hint="the program the config reads as:\n" + text) from None
    return cfg, fam, model


def import_hf(path) -> str:
    """The canonical `.hyb` text of a checkpoint directory or config.json (`hybridc import-hf`)."""
    from ..canonical import dumps
    from .checkpoint import Checkpoint

    _, fam, model = _read(Checkpoint(path))
    return header(fam) + dumps(model)


def load_hf(path):
    """A checkpoint directory's (or config.json's) model as a resolved `Model`."""
    from .checkpoint import Checkpoint

    return _read(Checkpoint(path))[2]


def _hf_shapes(ck, fam) -> dict:
    """The checkpoint's tensor shapes, less those the family leaves unread on purpose (`UNUSED_TENSORS`: regexes of
    tensors transformers does not load either, e.g. Qwen3-Next's multi-token-prediction head `mtp.*`)."""
    drop = [re.compile(p) for p in getattr(fam, "UNUSED_TENSORS", ())]
    return {n: s for n, s in ck.shapes().items() if not any(p.match(n) for p in drop)}


def _adapter(net):
    """The framework side for `net`: a torch module, a JAX model (init/apply), or a dict of arrays."""
    from .. import registry
    from ..weights import _is_torch_module

    if _is_torch_module(net):
        return registry.get("torch").hf()
    if isinstance(net, str) and net in ("torch", "jax"):
        return registry.get(net).hf()
    if hasattr(net, "init") and hasattr(net, "apply"):
        return registry.get("jax").hf()
    if isinstance(net, dict):
        mod = type(next(iter(net.values()), None)).__module__ if net else ""
        if mod.startswith(("jax", "jaxlib")):
            return registry.get("jax").hf()
        from .numpy_side import NumpySide

        return NumpySide()
    raise TypeError(f"expected a torch module, a JAX model or a dict of arrays, got {type(net).__name__}")


def load_hf_weights(net, path, dtype: str | None = None, *, progress: bool = False):
    """Load a checkpoint's tensors: into a built torch model in place (returned), or as JAX params for a JAX model.

    `dtype` ("fp32", "bf16", "fp16") defaults to the checkpoint's own. Every name and shape is checked before any
    tensor is read: on an error nothing is loaded.
    """
    from .checkpoint import DTYPE_NAMES, Checkpoint
    from .convert import plan_shapes

    side = _adapter(net)
    ck = Checkpoint(path)
    cfg, fam, model = _read(ck)
    shapes = side.shapes(net)
    maps = fam.tensors(cfg, model, list(shapes))
    plan_shapes(maps, _hf_shapes(ck, fam), shapes, source_name=str(ck.dir), where=ck.where())
    if dtype is not None and dtype not in DTYPE_NAMES:
        raise HybridcError(f"dtype {dtype!r}: valid dtypes are fp32, bf16, fp16")
    tag = DTYPE_NAMES[dtype] if dtype is not None else ck.dtype()
    sink = side.loader(net, tag)
    bar = _progress(ck) if progress else None
    try:
        for m in maps:
            arrays = [side.from_checkpoint(*ck.read(n)) for n in m.hf]
            for name, t in zip(m.ours, m.to_ours(side.xp, arrays)):
                sink.put(name, t)
            if bar is not None:
                bar.advance(len(m.hf), sum(ck.entries()[n].nbytes for n in m.hf))
    finally:
        if bar is not None:
            bar.close()
    return sink.done()


def _progress(ck):
    if len(ck.files()) < 2:
        return None
    from .progress import Bar

    return Bar(len(ck.entries()), ck.nbytes())


def convert_checkpoint(path, out, *, progress: bool = True) -> str:
    """A checkpoint's tensors as a hybridc weights file (fp32 numpy, `hybridc.load_weights` reads it); -> the
    `.hyb` text (`hybridc import-hf --weights`)."""
    from ..canonical import dumps
    from .checkpoint import Checkpoint, write_safetensors
    from .convert import plan_shapes
    from .numpy_side import NumpySide

    ck = Checkpoint(path)
    cfg, fam, model = _read(ck)
    side = NumpySide()
    shapes = side.model_shapes(model)
    maps = fam.tensors(cfg, model, list(shapes))
    plan_shapes(maps, _hf_shapes(ck, fam), shapes, source_name=str(ck.dir), where=ck.where())
    out_arrays = {}
    bar = _progress(ck) if progress else None
    try:
        for m in maps:
            arrays = [side.from_checkpoint(*ck.read(n)) for n in m.hf]
            out_arrays.update(zip(m.ours, m.to_ours(side.xp, arrays)))
            if bar is not None:
                bar.advance(len(m.hf), sum(ck.entries()[n].nbytes for n in m.hf))
    finally:
        if bar is not None:
            bar.close()
    write_safetensors(out_arrays, Path(out))
    return header(fam) + dumps(model)


def export_family(model, model_type: str | None = None):
    """(family module, config dict) of the transformers family that expresses `model` exactly (`model_type`, or the
    first that does); else an error naming, per family, the part with no equivalent."""
    from ..canonical import dumps
    from ..resolve import load
    from .config import HFConfig

    if model_type is not None and model_type not in FAMILIES:
        raise HybridcError(f"model_type {model_type!r}: hybridc has no exporter for it",
                           hint=suggest(model_type, FAMILIES) or f"families: {', '.join(FAMILIES)}")
    kinds = ["+".join(m.kind for m in layer.mixers) for layer in model.layers]
    known = set().union(*LAYER_KINDS.values())
    alien = [f"layer {i + 1} ({k})" for i, k in enumerate(kinds) if k not in known]
    if alien and model_type is None:
        raise HybridcError("no transformers family expresses this model: " + ", ".join(alien[:5]) +
                           " has no equivalent in any family hybridc exports",
                           hint="families and their layer kinds: " + "; ".join(
                               f"{t} ({', '.join(sorted(k))})" for t, k in LAYER_KINDS.items()))
    fits = [t for t in FAMILIES if set(kinds) <= LAYER_KINDS[t]] or list(FAMILIES)
    order = [model_type] if model_type else sorted(fits, key=lambda t: t != model.name)  # its own family first
    reasons = {}
    for mt in order:
        want = dumps(model.model_copy(update={"name": mt}))
        try:
            fam = family(mt)
        except ModuleNotFoundError:  # pragma: no cover -- a family module not written yet
            continue
        try:
            cfg = fam.to_config(model)
        except NotExpressible as e:
            reasons[mt] = str(e)
            continue
        cfg = {"architectures": [fam.HF_CLASS], "model_type": fam.MODEL_TYPE, **cfg}
        got = dumps(load(f"model {mt}\n" + fam.to_hyb(HFConfig(cfg))))
        if got == want:
            return fam, cfg
        diff = [f"{a!r} where the model has {b!r}" for a, b in zip(got.splitlines(), want.splitlines()) if a != b]
        reasons[mt] = "its config reads back as " + (diff[0] if diff else "a different program")
    raise HybridcError("no transformers family expresses this model exactly:\n  " + "\n  ".join(
        f"{mt}: {why}" for mt, why in reasons.items()))


def save_hf(net_or_params, model, out_dir, *, model_type: str | None = None, dtype: str | None = None) -> Path:
    """Write `config.json` and `model.safetensors` that transformers' `from_pretrained` loads (every name used).

    `net_or_params`: a torch module, JAX params or numpy arrays (hybridc names); `dtype` (fp32, bf16, fp16) defaults
    to the tensors' own."""
    from .checkpoint import DTYPE_NAMES, write_safetensors
    from .config import HFConfig, encode

    if isinstance(model, str):
        from ..resolve import load

        model = load(model)
    fam, cfg = export_family(model, model_type)
    side = _adapter(net_or_params)
    ours = side.named(net_or_params)
    maps = fam.tensors(HFConfig(cfg), model, list(ours))
    produced = {n for m in maps for n in m.ours}
    if produced != set(ours):
        missing, extra = sorted(produced - set(ours)), sorted(set(ours) - produced)
        raise HybridcError(f"the weights do not match the model: missing {missing[:5]}, unexpected {extra[:5]}")
    if dtype is not None and dtype not in DTYPE_NAMES:
        raise HybridcError(f"dtype {dtype!r}: valid dtypes are fp32, bf16, fp16")
    tag = DTYPE_NAMES[dtype] if dtype else side.dtype_tag(ours)
    hf = {}
    for m in maps:
        for name, t in zip(m.hf, m.to_hf(side.xp, [ours[n] for n in m.ours])):
            hf[name] = side.to_bits(t, tag)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = dict(cfg)
    cfg["dtype"] = {"F32": "float32", "BF16": "bfloat16", "F16": "float16"}[tag]
    write_safetensors(hf, out / "model.safetensors", metadata={"format": "pt"})
    tmp = out / "config.json.tmp"
    tmp.write_text(json.dumps(encode(cfg), indent=2, sort_keys=True) + "\n")
    tmp.replace(out / "config.json")
    return out


__all__ = ["FAMILIES", "NotExpressible", "import_hf", "load_hf", "load_hf_weights", "save_hf", "convert_checkpoint",
           "export_family"]
