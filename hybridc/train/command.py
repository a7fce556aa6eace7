"""`hybridc train MODEL.hyb --task mqar ... --out DIR [--resume]`: flags, the checks made before any training,
and the run. Exit codes as the rest of the CLI: 1 a model that does not fit (or differs from the resumed run's),
2 bad usage (unknown task or option, bad values, a --resume that contradicts the saved options)."""
from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from pathlib import Path

from . import COMMANDS

TASK_FLAGS = {"vocab": "vocab", "seq_len": "seq_len", "kv_pairs": "num_kv_pairs"}  # flag dest -> task option
OPTION_FLAGS = ("backend", "steps", "batch", "lr", "warmup", "weight_decay", "seed", "checkpoint_every", "eval_every",
                "eval_batches")
REQUIRED = ("steps", "batch", "lr")


def add_parser(sub) -> argparse.ArgumentParser:
    t = sub.add_parser("train", help=COMMANDS["train"][1],
                       description="Train MODEL.hyb on a synthetic task with AdamW, linear warmup and cosine decay. "
                       "The model must take token ids (`vocab V`, V >= the task's vocab) and output logits "
                       "(`output logits`). With --resume, omitted options are the saved run's.")
    t.add_argument("file", metavar="MODEL.hyb")
    t.add_argument("--task", help="mqar, in_context_recall, fuzzy_recall, noisy_recall, selective_copying, "
                   "compression, memorization, text")
    t.add_argument("--vocab", type=int, help="the task's vocabulary (task option vocab)")
    t.add_argument("--seq-len", type=int, help="the task's sequence length (task option seq_len)")
    t.add_argument("--kv-pairs", type=int, help="MQAR key-value pairs (task option num_kv_pairs)")
    t.add_argument("--task-option", action="append", default=[], metavar="KEY=VALUE",
                   help="any other task option (repeatable), e.g. power_a=0.01 or path=corpus.txt")
    t.add_argument("--backend", help="torch (default) or jax")
    t.add_argument("--steps", type=int, help="optimizer steps")
    t.add_argument("--batch", type=int, help="sequences per step")
    t.add_argument("--lr", type=float, help="peak learning rate")
    t.add_argument("--warmup", type=int, help="linear warmup steps (default: 10%% of --steps)")
    t.add_argument("--weight-decay", type=float, help="AdamW weight decay of matrices (default 0.1)")
    t.add_argument("--seed", type=int, help="seed of the weights, dropout and the data (default 0)")
    t.add_argument("--checkpoint-every", type=int, help="checkpoint every K steps (default: only at the end)")
    t.add_argument("--eval-every", type=int, help="evaluate and log every N steps (default: --steps / 20)")
    t.add_argument("--eval-batches", type=int, help="evaluation batches of --batch sequences (default 4)")
    t.add_argument("--out", required=True, metavar="DIR", help="run folder: run.json, metrics.jsonl, checkpoint/")
    t.add_argument("--resume", action="store_true", help="continue the run in DIR from its last checkpoint")
    t.add_argument("--quiet", action="store_true", help="log lines instead of a progress bar")
    t.add_argument("--distributed", choices=("ddp", "fsdp"),
                   help="torch on several processes, launched by torchrun: ddp (replicated) or fsdp (FSDP2, sharded); "
                   "--batch is the global batch, split across the processes")
    t.add_argument("--devices", type=int, metavar="N",
                   help="jax: a mesh of N devices, the batch split over them and parameters and optimizer state "
                   "sharded (FSDP); --batch is the global batch, a multiple of N. Not saved: --resume may use another N")
    t.set_defaults(fn=cmd_train)
    return t


def _usage(message: str):
    from ..errors import UsageError

    return UsageError(message)


def _read(path: str) -> tuple[str, str]:
    p = Path(path)
    if not p.is_file():
        raise _usage(f"no such file: {path}")
    return p.read_text(), str(p)


def _task_options(a) -> dict:
    opts = {TASK_FLAGS[k]: getattr(a, k) for k in TASK_FLAGS if getattr(a, k) is not None}
    for item in a.task_option:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise _usage(f"--task-option takes KEY=VALUE, got {item!r}")
        opts[key.strip().replace("-", "_")] = value.strip()
    return opts


def _saved(out: Path) -> dict:
    path = out / "run.json"
    if not path.is_file():
        raise _usage(f"--resume: {out} holds no run (no run.json); start it without --resume")
    return json.loads(path.read_text())


def _resolve(a):
    """(task name, task options, TrainConfig) from the flags, the omitted ones from the saved run with --resume."""
    from .loop import TrainConfig

    out = Path(a.out)
    given = {k: getattr(a, k) for k in OPTION_FLAGS if getattr(a, k) is not None}
    task_opts = _task_options(a)
    name = a.task
    if a.resume:
        saved = _saved(out)
        if name is not None and name != saved["task"]:
            raise _usage(f"--resume: the run in {out} trains task {saved['task']}, not {name}")
        name = saved["task"]
        clash = {k: (saved["options"].get(k), v) for k, v in given.items() if saved["options"].get(k) != v}
        if clash:
            raise _usage("--resume: options differ from the saved run's: " + ", ".join(
                f"--{k.replace('_', '-')} {v} (saved {s})" for k, (s, v) in clash.items()))
        given = {k: saved["options"][k] for k in OPTION_FLAGS if k in saved["options"]} | given
        task_opts = dict(saved["task_options"]) | task_opts
    elif (out / "run.json").exists():
        raise _usage(f"{out} already holds a run: continue it with --resume, or choose a new --out")
    if name is None:
        raise _usage("--task is required (e.g. --task mqar)")
    missing = [f"--{k}" for k in REQUIRED if k not in given]
    if missing:
        raise _usage(f"{', '.join(missing)} required")
    config = TrainConfig(**given)
    if config.problems():
        raise _usage("; ".join(config.problems()))
    return name, task_opts, config


def _make_task(name: str, options: dict):
    from ..errors import HybridcError
    from ..tasks import make_task

    try:
        return make_task(name, **options)
    except HybridcError as e:  # an unknown task or option, a bad value: usage
        raise _usage(e.message + (f"\n  {e.hint}" if e.hint else "")) from None


def cmd_train(a) -> int:
    from .. import registry
    from ..canonical import dumps
    from ..errors import BackendError
    from ..resolve import load
    from .loop import check_model, train
    from .progress import Progress

    name, task_opts, config = _resolve(a)
    text, source_name = _read(a.file)
    model = load(text, source_name)
    task = _make_task(name, task_opts)
    if a.resume:
        saved = _saved(Path(a.out))["task_options"]
        clash = {k: (saved.get(k), v) for k, v in task.options.items() if saved.get(k) != v}
        if clash:
            raise _usage("--resume: task options differ from the saved run's: " + ", ".join(
                f"{k}={v} (saved {s})" for k, (s, v) in clash.items()))
    check_model(model, task, source=text, source_name=source_name)
    if a.distributed and config.backend != "torch":
        raise _usage(f"--distributed is for the torch backend, not {config.backend}")
    world = os.environ.get("WORLD_SIZE", "1")
    if not a.distributed and config.backend == "torch" and world.isdigit() and int(world) > 1:
        raise _usage(f"launched on {world} processes (WORLD_SIZE={world}): add --distributed ddp or fsdp, "
                     "or run one process")
    if a.devices is not None and config.backend != "jax":
        raise _usage(f"--devices is for the jax backend, not {config.backend} (torch: --distributed under torchrun)")
    if a.devices is not None and (a.devices < 1 or config.batch % a.devices):
        raise _usage(f"--devices {a.devices}: must be >= 1 and divide --batch {config.batch}")
    backend = registry.get(config.backend)
    if not hasattr(backend, "trainer"):
        raise BackendError(f"the {config.backend} backend has no trainer")
    factory = backend.trainer if a.devices is None else functools.partial(backend.trainer, devices=a.devices)
    try:
        train(model, task, config, a.out, model_text=dumps(model), resume=a.resume, trainer_factory=factory,
              progress=Progress(quiet=a.quiet, title=Path(a.out).name or "train"), distributed=a.distributed)
    except KeyboardInterrupt:
        from .loop import latest_checkpoint

        ckpt = latest_checkpoint(a.out)
        where = f"the last checkpoint is {ckpt}; continue with --resume" if ckpt else "no checkpoint was written yet"
        print(f"hybridc: interrupted: {where}", file=sys.stderr)
        return 130
    return 0
