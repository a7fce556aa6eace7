"""Training a `.hyb` model on a synthetic task: the framework-free loop and the backend trainer protocol.

    from hybridc.train import TrainConfig, train
    train(model, task, TrainConfig(steps=300, batch=32, lr=1e-3), out="runs/a")

`loop.py` owns seeds, batches, the learning-rate schedule, evaluation, metrics, checkpoints and resume;
a backend supplies the framework part through `backend.trainer(...)` (see `loop.Trainer`). Nothing here imports
torch or jax (numpy is imported inside the functions that need it).
"""
from __future__ import annotations

from .loop import (CHECKPOINT, METRICS, RUN, TrainConfig, Trainer, atomic, check_model, latest_checkpoint, lr_at,
                   read_metrics, train)

__all__ = ["CHECKPOINT", "METRICS", "RUN", "TrainConfig", "Trainer", "atomic", "check_model", "latest_checkpoint",
           "lr_at", "read_metrics", "train"]
