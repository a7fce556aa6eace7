"""`hybridc sweep SPEC.toml`: a grid of training runs (models x dims x learning rates x seeds), one after another in
this process, each into its own run folder; a rerun skips finished runs and resumes unfinished ones.

    out = "runs/mqar"            # optional (default: a folder named after the spec, beside it); paths are
    backend = "torch"            #   relative to the spec file's folder
    steps = 2000
    batch = 64
    lrs = [1e-3, 3e-3]
    seeds = [0]                  # optional (default [0])
    dims = [64, 128]             # optional: each model's `dim` is replaced (default: the model's own)
    # optional, as hybridc train: warmup, weight_decay, eval_every, eval_batches, checkpoint_every, grad_clip

    [task]
    name = "mqar"                # and the task's options: vocab, seq_len, num_kv_pairs, ...
    seq_len = 256

    [models]                     # name = a .hyb path, or the .hyb text itself
    attention = "models/attention.hyb"
    hybrid = '''
    layers gated_delta_net attn
    vocab 8192
    output logits
    '''

Run folders are named `<model>-d<dim>-lr<lr>-s<seed>` under `out`; the model's `model` statement becomes the
sweep's name for it, so `hybridc plot --summary OUT` groups by it. Every model, dim and option is checked before
the first run starts.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError, suggest
from . import COMMANDS

GRID = {"lrs": float, "seeds": int, "dims": int}
OPTIONS = {"backend": str, "steps": int, "batch": int, "warmup": int, "weight_decay": float, "eval_every": int,
           "eval_batches": int, "checkpoint_every": int, "grad_clip": float}
TOP = {"out", "task", "models", *GRID, *OPTIONS}
REQUIRED = ("steps", "batch", "lrs", "task", "models")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


@dataclass
class Job:
    name: str
    model_name: str
    dim: int | None
    lr: float
    seed: int
    text: str  # the .hyb text trained (name and dim set)
    source: str  # where the model came from, for error messages


def _toml(path: Path) -> dict:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        try:
            import tomli as tomllib
        except ImportError:
            raise UsageError("reading a sweep spec on Python 3.10 needs tomli: pip install 'hybridc[train]'") from None
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"{path}: not valid TOML: {e}") from None


def _unknown(key: str, valid, where: str) -> UsageError:
    close = suggest(key, valid)
    return UsageError(f"{where}: unknown key '{key}'" + (f" ({close})" if close else "")
                      + f"; valid keys: {', '.join(sorted(valid))}")


def _typed(value, kind, where: str):
    if isinstance(value, bool) or not (isinstance(value, kind) or (kind is float and isinstance(value, int))):
        what = {float: "a number", int: "an integer", str: "a string"}[kind]
        raise UsageError(f"{where} must be {what}, got {value!r}")
    return kind(value)


def with_name_dim(text: str, name: str, dim: int | None) -> str:
    """The .hyb text with its `model` statement (and with a dim, its `dim` statement) replaced."""
    drop = ("model",) if dim is None else ("model", "dim")
    lines = []
    for line in text.splitlines():
        code, hash_, comment = line.partition("#")
        pieces = code.split(";")
        kept = [s for s in pieces if not (s.split() and s.split()[0] in drop)]
        if len(kept) < len(pieces) and not "".join(kept).strip() and not hash_:
            continue  # the line held only what is replaced
        lines.append(";".join(kept).strip() + (f" {hash_}{comment}" if hash_ else ""))
    head = f"model {name}\n" + ("" if dim is None else f"dim {dim}\n")
    return head + "\n".join(lines) + "\n"


def parse_spec(path: Path, out: str | None = None) -> tuple[dict, list[Job], Path]:
    """(task {name, options}, jobs, out folder) from a spec file; UsageError for anything malformed."""
    spec = _toml(path)
    for key in spec:
        if key not in TOP:
            raise _unknown(key, TOP, str(path))
    missing = [k for k in REQUIRED if k not in spec]
    if missing:
        raise UsageError(f"{path}: missing {', '.join(missing)} (a sweep needs {', '.join(REQUIRED)})")
    options = {k: _typed(spec[k], OPTIONS[k], f"{path}: {k}") for k in OPTIONS if k in spec}
    grid = {}
    for key, kind in GRID.items():
        values = spec.get(key, [0] if key == "seeds" else [None] if key == "dims" else None)
        values = values if isinstance(values, list) else [values]
        if not values:
            raise UsageError(f"{path}: {key} is empty")
        grid[key] = [v if v is None else _typed(v, kind, f"{path}: {key}") for v in values]
    task = spec["task"]
    if not isinstance(task, dict) or not isinstance(task.get("name"), str):
        raise UsageError(f"{path}: [task] needs name = \"mqar\" (or another task) and the task's options")
    models = spec["models"]
    if not isinstance(models, dict) or not models:
        raise UsageError(f"{path}: [models] needs at least one entry: name = \"file.hyb\" or the .hyb text")
    base = path.parent
    jobs = []
    for name, value in models.items():
        if not _NAME.match(name):
            raise UsageError(f"{path}: model name '{name}' must be an identifier (letters, digits, _), "
                             "as in a .hyb `model` statement")
        if not isinstance(value, str):
            raise UsageError(f"{path}: models.{name} must be a .hyb path or .hyb text, got {value!r}")
        text, source = _model_text(value, base, f"{path} [models] {name}")
        for dim in grid["dims"]:
            for lr in grid["lrs"]:
                for seed in grid["seeds"]:
                    run = f"{name}{'' if dim is None else f'-d{dim}'}-lr{lr:g}-s{seed}"
                    jobs.append(Job(run, name, dim, lr, seed, with_name_dim(text, name, dim), source))
    dest = Path(out) if out is not None else base / _typed(spec.get("out", path.stem), str, f"{path}: out")
    return {"name": task["name"], "options": {k: v for k, v in task.items() if k != "name"}, **options}, jobs, dest


def _model_text(value: str, base: Path, where: str) -> tuple[str, str]:
    if "\n" in value or ";" in value or not value.strip().endswith(".hyb"):
        return value, where
    p = Path(value) if Path(value).is_absolute() else base / value
    if not p.is_file():
        raise UsageError(f"{where}: no such file: {p}")
    return p.read_text(), str(p)


def _config(settings: dict, lr: float, seed: int):
    from .loop import TrainConfig

    opts = {k: v for k, v in settings.items() if k not in ("name", "options")}
    config = TrainConfig(lr=lr, seed=seed, **opts)
    if config.problems():
        raise UsageError("; ".join(config.problems()).replace("--", ""))
    return config


def _prepare(settings: dict, jobs: list[Job]):
    """The task and, per job, (model, config): every model and option checked before anything trains."""
    from .. import registry
    from ..errors import HybridcError
    from ..resolve import load
    from ..tasks import make_task
    from .loop import check_model

    try:
        task = make_task(settings["name"], **settings["options"])
    except HybridcError as e:
        raise UsageError(e.message + (f"\n  {e.hint}" if e.hint else "")) from None
    backend = registry.get(settings.get("backend", "torch"))
    if not hasattr(backend, "trainer"):
        raise UsageError(f"the {settings.get('backend')} backend has no trainer")
    ready = []
    for job in jobs:
        model = load(job.text, job.source)  # a bad model: a located HybridcError, exit 1
        check_model(model, task, source=job.text, source_name=job.source)
        ready.append((job, model, _config(settings, job.lr, job.seed)))
    return task, ready


def _status(folder: Path, steps: int) -> str:
    """'new', 'done' (its last checkpoint is at the final step) or 'resume'."""
    from .loop import STATE, latest_checkpoint

    ckpt = latest_checkpoint(folder)
    if ckpt is None:
        return "new"
    return "done" if json.loads((ckpt / STATE).read_text()).get("step") == steps else "resume"


def run_sweep(spec: Path, *, out: str | None = None, quiet: bool = False, dry_run: bool = False,
              stream=None) -> tuple[Path, list[dict]]:
    """Run (or, rerun, finish) every job of a spec: (the sweep's folder, one {name, folder, status} per job)."""
    from .loop import run_record, check_resume, train, write_json
    from .progress import Progress

    stream = stream or sys.stderr
    settings, jobs, dest = parse_spec(Path(spec), out)
    task, ready = _prepare(settings, jobs)
    report = []
    if not dry_run:
        dest.mkdir(parents=True, exist_ok=True)
        write_json(dest / "sweep.json", {"spec": str(spec), "task": getattr(task, "name", settings["name"]),
                                         "task_options": dict(task.options),
                                         "runs": [{"name": j.name, "model": j.model_name, "dim": j.dim, "lr": j.lr,
                                                   "seed": j.seed} for j in jobs]})
    for i, (job, model, config) in enumerate(ready, 1):
        folder = dest / job.name
        status = _status(folder, config.steps)
        if status == "resume":
            check_resume(folder, run_record(job.text, task, config))  # a changed spec: a clear error, no training
        print(f"[{i}/{len(ready)}] {job.name}: {'finished, skipped' if status == 'done' else status}",
              file=stream, flush=True)
        if status != "done" and not dry_run:
            train(model, task, config, folder, model_text=job.text, resume=status == "resume",
                  progress=Progress(quiet=quiet, title=job.name))
        report.append({"name": job.name, "folder": str(folder), "status": status})
    return dest, report


def cmd_sweep(a) -> int:
    if not Path(a.spec).is_file():
        raise UsageError(f"no such file: {a.spec}")
    dest, report = run_sweep(Path(a.spec), out=a.out, quiet=a.quiet, dry_run=a.dry_run)
    trained = sum(r["status"] != "done" for r in report)
    print(f"{len(report)} runs ({trained} {'to train' if a.dry_run else 'trained'}, {len(report) - trained} already "
          f"finished) in {dest}; plot them: hybridc plot --summary {dest} -o summary.png", file=sys.stderr)
    return 0


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("sweep", help=COMMANDS["sweep"][1],
                       description="Run every (model, dim, learning rate, seed) of SPEC.toml in turn, each into "
                       "OUT/<model>-d<dim>-lr<lr>-s<seed>/ (as hybridc train --out). Rerunning skips finished "
                       "runs and resumes unfinished ones. See docs/training.md for the spec's keys.")
    p.add_argument("spec", metavar="SPEC.toml")
    p.add_argument("--out", metavar="DIR", help="the sweep's folder (default: the spec's `out`, or a folder named "
                   "after the spec beside it)")
    p.add_argument("--quiet", action="store_true", help="log lines instead of progress bars")
    p.add_argument("--dry-run", action="store_true", help="check the spec and list the runs; train nothing")
    p.set_defaults(fn=cmd_sweep)
    return p
