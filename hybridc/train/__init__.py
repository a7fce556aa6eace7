"""Training a `.hyb` model on a synthetic task: the framework-free loop and the backend trainer protocol.

    from hybridc.train import TrainConfig, train
    train(model, task, TrainConfig(steps=300, batch=32, lr=1e-3), out="runs/a")

`loop.py` owns seeds, batches, the learning-rate schedule, evaluation, metrics, checkpoints and resume (and
documents the `backend.trainer(...)` protocol, `Trainer`); `progress.py` the progress bar; `command.py` the
`hybridc train` flags. Nothing here imports torch or jax; numpy only inside the functions that need it. Names are
imported on first use, so registering the `train` subcommand costs `hybridc describe` nothing.
"""
from __future__ import annotations

import importlib

COMMANDS = {"train": ("command", "train a model on a task (MQAR, MAD, text): progress, metrics, checkpoints"),
            "plot": ("plot", "plot training curves of run folders, or a sweep's summary (--summary)"),
            "sweep": ("sweep", "train a grid of runs (models x dims x lrs x seeds) from a TOML spec")}
"""The CLI subcommands this package adds: name -> (module defining `add_parser`, one-line help). The CLI imports a
module only when its command runs (`hybridc --help` lists them all from here)."""
_EXPORTS = {name: "hybridc.train.loop" for name in (
    "CHECKPOINT", "METRICS", "RUN", "TrainConfig", "Trainer", "atomic", "check_model", "latest_checkpoint", "lr_at",
    "read_metrics", "train")} | {"Progress": "hybridc.train.progress"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'hybridc.train' has no attribute {name!r}")


def __dir__():
    return __all__
