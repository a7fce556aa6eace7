"""The training loop, framework-free: seeds, task batches, the schedule, evaluation, metrics, checkpoints, resume.

The backend trainer protocol (a backend object's method, like `build`):

    backend.trainer(model, *, lr, warmup, steps, weight_decay, seed, betas=(0.9, 0.95), grad_clip=1.0) -> Trainer

`model` is the resolved IR with `vocab >= task.vocab` and `output logits` (checked here, `check_model`). The trainer
builds the model with its weights initialised from `seed` (torch: `torch.manual_seed(seed)` before `build`; JAX:
`PRNGKey(seed)`), an AdamW optimizer (`betas`, `weight_decay`, gradients clipped to global norm `grad_clip`), and:

    step(inputs, labels, lr) -> {"loss": float}   one optimizer step at learning rate `lr` (the loop's schedule);
                                                   loss = mean cross-entropy over labels != -100 (reported);
                                                   the gradient's loss adds the MoE auxiliary losses weighted by
                                                   AUX_WEIGHTS where the model returns them (reported: aux_loss)
    evaluate(inputs, labels) -> {"eval_loss": float, "accuracy": float}
                                                   no dropout, no update; accuracy = argmax == label over the
                                                   positions with label != -100
    save(dir: Path)                                writes into an existing empty folder: `model.safetensors`
                                                   (`hybridc.save_weights` format), the optimizer state and the
                                                   framework RNG state (dropout); each file through `atomic`
    load(dir: Path)                                restores exactly what `save` wrote

`inputs` and `labels` are numpy int64 arrays (B, L). The loop owns everything else: the numpy data streams, the
step counter and the running metrics (in `state.json` beside the trainer's files).

Run folder `out/`:
    run.json        the resolved model's canonical text, the task and its resolved options, every training option
    metrics.jsonl   one JSON object per logged step: step, loss (mean train loss since the last line), eval_loss,
                    accuracy, tokens_per_s (training tokens per second since the last line), time (seconds of
                    training so far, resumes included)
    checkpoint/     the latest complete checkpoint: the trainer's files + state.json (step, the train stream's RNG
                    state, the running sums)

A checkpoint is written into `checkpoint.tmp/`, then swapped in by renames (`checkpoint` -> `checkpoint.old`,
`checkpoint.tmp` -> `checkpoint`, then `checkpoint.old` removed): a run killed at any point leaves `checkpoint/`
or, between the two renames, `checkpoint.old/` complete, and `latest_checkpoint` finds it. `--resume` restores
the checkpoint, drops metrics lines after its step and continues: the metrics equal an uninterrupted run's.

More than one process (`--distributed`, torch: backends/hybridc_torch/distributed.py): every rank runs this loop
with the same streams and hands the trainer the same global batch (the trainer takes its rank's slice and reduces
the reported numbers over ranks). Optional trainer hooks, absent on one process: `is_main` (False on every rank but
0: those write no run.json, metrics, state.json or progress), `world` (the number of processes: --batch must be a
multiple), `barrier()` (around each checkpoint: every rank's `save` writes into the same folder, which rank 0 creates
and then swaps in), `close()` (at the end).

Data: `SeedSequence(seed).spawn(2)` gives the train stream (one `default_rng`, advanced batch by batch, its state
checkpointed) and the eval stream (the same `eval_batches` batches at every evaluation).
"""
from __future__ import annotations

import json
import math
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Callable, Optional, Protocol

from ..errors import HybridcError

RUN, METRICS, CHECKPOINT, STATE = "run.json", "metrics.jsonl", "checkpoint", "state.json"
AUX_WEIGHTS = {"load_balance": 0.01, "z_loss": 0.001}
"""Weights of the MoE auxiliary losses in the training loss (Switch's load-balancing alpha 0.01, ST-MoE's router
z-loss 0.001); the model returns them unweighted (docs/layers.md, mixture of experts). Both trainers read this."""


class Trainer(Protocol):
    """What `backend.trainer(...)` returns (see the module docstring)."""

    def step(self, inputs, labels, lr: float) -> dict: ...

    def evaluate(self, inputs, labels) -> dict: ...

    def save(self, dir: Path) -> None: ...

    def load(self, dir: Path) -> None: ...


@dataclass(frozen=True)
class TrainConfig:
    """Every training option (saved in run.json). `warmup` None: 10% of the steps; `eval_every` None: steps / 20;
    `checkpoint_every` None: only at the end."""

    steps: int
    batch: int
    lr: float
    backend: str = "torch"
    warmup: Optional[int] = None
    weight_decay: float = 0.1
    seed: int = 0
    checkpoint_every: Optional[int] = None
    eval_every: Optional[int] = None
    eval_batches: int = 4
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0

    @property
    def warmup_steps(self) -> int:
        return self.steps // 10 if self.warmup is None else self.warmup

    @property
    def eval_interval(self) -> int:
        return max(1, self.steps // 20) if self.eval_every is None else self.eval_every

    def problems(self) -> list[str]:
        """Invalid values, as messages naming the flag."""
        out = []
        for name in ("steps", "batch", "eval_batches"):
            if getattr(self, name) < 1:
                out.append(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        for name in ("checkpoint_every", "eval_every"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                out.append(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            out.append(f"--lr must be > 0, got {self.lr}")
        if self.warmup is not None and not 0 <= self.warmup <= self.steps:
            out.append(f"--warmup must be in [0, --steps], got {self.warmup}")
        if self.weight_decay < 0:
            out.append(f"--weight-decay must be >= 0, got {self.weight_decay}")
        return out

    def to_json(self) -> dict:
        return {**asdict(self), "betas": list(self.betas)}

    @classmethod
    def from_json(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: (tuple(v) if k == "betas" else v) for k, v in d.items() if k in names})


def lr_at(step: int, *, lr: float, warmup: int, steps: int) -> float:
    """Learning rate of 0-based `step`: linear warmup to `lr` over `warmup` steps, then cosine decay towards 0."""
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


@contextmanager
def atomic(path):
    """Write a file atomically: yields a temporary path beside `path`; renamed onto `path` when the block ends
    without an error (removed otherwise)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_json(path, obj) -> None:
    with atomic(path) as tmp:
        Path(tmp).write_text(json.dumps(obj, indent=2) + "\n")


def _locate(source: str, words: tuple[str, ...]):
    """The Pos of the first statement starting with one of `words` in a .hyb text, or None."""
    import re

    from ..errors import Pos

    m = re.search(r"(?:^|;)[ \t]*((?:%s)\b[^;\n]*)" % "|".join(words), source, re.M)
    if not m:
        return None
    line = source.count("\n", 0, m.start(1)) + 1
    column = m.start(1) - (source.rfind("\n", 0, m.start(1)) + 1) + 1
    return Pos(line, column, len(m.group(1).rstrip()))


def check_model(model, task, *, source: Optional[str] = None, source_name: str = "<string>") -> None:
    """The model must take token ids (`vocab V`, V >= the task's vocab) and output logits (`output logits`);
    otherwise a located HybridcError. The loop never changes the model: the trained weights are those of the
    file's model, and `hybridc describe` of the same file shows their cost."""
    def fail(message, words, hint):
        pos = _locate(source, words) if source else None
        raise HybridcError(message, pos, source=source, source_name=source_name, hint=hint)

    name = getattr(task, "name", "the task")
    if model.vocab is None:
        fail(f"task {name} feeds token ids, but the model takes {model.input} continuous features (input "
             f"{model.input})", ("input",), f"write `vocab {task.vocab}` (or larger) instead of `input {model.input}`")
    if model.vocab < task.vocab:
        fail(f"vocab {model.vocab} is smaller than task {name}'s vocabulary of {task.vocab} tokens", ("vocab",),
             f"write `vocab {task.vocab}` in the model, or pass --vocab {model.vocab} to make the task smaller")
    if model.output != "logits":
        fail(f"training needs next-token logits, but the model outputs `{model.output}`", ("output",),
             "add `output logits` to the model")


def latest_checkpoint(out) -> Optional[Path]:
    """The newest complete checkpoint folder in a run folder (`checkpoint/`, or `checkpoint.old/` when a run
    died between the renames of a swap), or None."""
    out = Path(out)
    for name in (CHECKPOINT, CHECKPOINT + ".old"):
        if (out / name / STATE).is_file():
            return out / name
    return None


def _save_checkpoint(out: Path, trainer, state: dict) -> None:
    tmp, final, old = out / (CHECKPOINT + ".tmp"), out / CHECKPOINT, out / (CHECKPOINT + ".old")
    main, barrier = getattr(trainer, "is_main", True), getattr(trainer, "barrier", None)
    if main:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
    if barrier:
        barrier()
    trainer.save(tmp)
    if barrier:
        barrier()
    if not main:
        return
    write_json(tmp / STATE, state)  # written last: a folder with state.json is complete
    if final.exists():
        if old.exists():
            shutil.rmtree(old)
        os.replace(final, old)
    os.replace(tmp, final)
    if old.exists():
        shutil.rmtree(old)


def read_metrics(out) -> list[dict]:
    """The complete lines of `out/metrics.jsonl` (a torn last line from a kill is skipped)."""
    path = Path(out) / METRICS
    rows = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    return rows


def run_record(model_text: str, task, config: TrainConfig) -> dict:
    """What run.json holds: enough to reproduce the run from its folder."""
    from .. import __version__

    return {"model": model_text, "task": getattr(task, "name", None), "task_options": dict(task.options),
            "options": config.to_json(), "hybridc": __version__}


def check_resume(out: Path, record: dict) -> Path:
    """The checkpoint to resume from; a HybridcError when the folder holds another model, task or options."""
    path = out / RUN
    if not path.is_file():
        raise HybridcError(f"--resume: {out} holds no run ({RUN} missing)")
    saved = json.loads(path.read_text())
    if saved.get("model") != record["model"]:
        raise HybridcError(f"--resume: the model differs from the one this run was trained with (saved in {path})",
                           hint="resume with the same .hyb (hybridc fmt shows the canonical text), or use a new --out")
    for key in ("task", "task_options", "options"):
        if saved.get(key) != record[key]:
            diff = {k: (saved[key].get(k), v) for k, v in record[key].items() if saved[key].get(k) != v} \
                if isinstance(record[key], dict) and isinstance(saved.get(key), dict) else (saved.get(key), record[key])
            raise HybridcError(f"--resume: {key} differ from the saved run's (saved, given): {diff}")
    ckpt = latest_checkpoint(out)
    if ckpt is None:
        raise HybridcError(f"--resume: {out} has no complete checkpoint yet", hint="start it again without --resume")
    return ckpt


def _eval(trainer, batches) -> dict:
    import numpy as np

    total = loss = correct = 0.0
    for x, y in batches:
        n = float(np.count_nonzero(y != -100))
        r = trainer.evaluate(x, y)
        loss += r["eval_loss"] * n
        correct += r["accuracy"] * n
        total += n
    return {"eval_loss": loss / max(total, 1.0), "accuracy": correct / max(total, 1.0)}


def train(model, task, config: TrainConfig, out, *, model_text: Optional[str] = None, resume: bool = False,
          trainer_factory: Optional[Callable] = None, progress=None, distributed: Optional[str] = None) -> list[dict]:
    """Train `model` (resolved IR) on `task` into the run folder `out`; returns the metrics rows.

    `trainer_factory(model, **kw)` defaults to the backend's `trainer`; `progress` is a `progress.Progress`
    (or None: silent). With `resume`, continues from the folder's latest checkpoint (same model and options).
    `distributed` ("ddp", "fsdp"; torch under torchrun) is passed to the factory when given."""
    from ..canonical import dumps

    bad = config.problems()
    if bad:
        raise HybridcError("; ".join(bad))
    out = Path(out)
    model_text = dumps(model) if model_text is None else model_text
    record = run_record(model_text, task, config)
    ckpt = check_resume(out, record) if resume else None
    if trainer_factory is None:
        from .. import registry

        trainer_factory = registry.get(config.backend).trainer
    trainer = trainer_factory(model, lr=config.lr, warmup=config.warmup_steps, steps=config.steps,
                              weight_decay=config.weight_decay, seed=config.seed, betas=config.betas,
                              grad_clip=config.grad_clip, **({"distributed": distributed} if distributed else {}))
    try:
        return _start(trainer, model, task, config, out, record, ckpt, progress)
    finally:
        if callable(getattr(trainer, "close", None)):
            trainer.close()


def _start(trainer, model, task, config, out, record, ckpt, progress) -> list[dict]:
    import numpy as np

    main, world = getattr(trainer, "is_main", True), getattr(trainer, "world", 1)
    if config.batch % world:
        from ..errors import UsageError

        raise UsageError(f"--batch {config.batch} must be a multiple of the {world} processes")
    if world > 1:
        record = {**record, "distributed": {"mode": getattr(trainer, "mode", None), "processes": world}}
    mesh = getattr(trainer, "mesh", None)  # JAX --devices N: the mesh the run started on (a resume may use another)
    if mesh is not None:
        record = {**record, "mesh": {str(k): int(v) for k, v in dict(mesh.shape).items()}}
    if not main:
        progress = None
    train_seq, eval_seq = np.random.SeedSequence(config.seed).spawn(2)
    train_rng = np.random.default_rng(train_seq)
    eval_rng = np.random.default_rng(eval_seq)
    eval_set = [task.batch(eval_rng, config.batch) for _ in range(config.eval_batches)]
    state = {"step": 0, "loss_sum": 0.0, "loss_count": 0, "tokens": 0, "time": 0.0}
    if ckpt is not None:
        trainer.load(ckpt)
        saved = json.loads((ckpt / STATE).read_text())
        train_rng.bit_generator.state = saved.pop("train_rng")
        state.update(saved)
        rows = [r for r in read_metrics(out) if r["step"] <= state["step"]]
        if main:
            with atomic(out / METRICS) as tmp:
                Path(tmp).write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        if main:
            out.mkdir(parents=True, exist_ok=True)
            write_json(out / RUN, record)
            if (out / METRICS).exists():
                (out / METRICS).unlink()
        rows = []
    if callable(getattr(trainer, "barrier", None)):
        trainer.barrier()  # rank 0 has set up the folder
    return _run(trainer, task, config, out, state, train_rng, eval_set, rows, progress)


def _run(trainer, task, config, out, state, train_rng, eval_set, rows, progress) -> list[dict]:
    steps, every, ck = config.steps, config.eval_interval, config.checkpoint_every
    if progress is not None:
        progress.start(state["step"], steps, rows[-1] if rows else None)
    t_last, tokens_last = time.perf_counter(), state["tokens"]
    time_base = state["time"] - t_last  # time = seconds of training, across resumes
    metrics = open(out / METRICS, "a") if getattr(trainer, "is_main", True) else None
    try:
        for step in range(state["step"], steps):
            x, y = task.batch(train_rng, config.batch)
            r = trainer.step(x, y, lr_at(step, lr=config.lr, warmup=config.warmup_steps, steps=steps))
            state["loss_sum"] += float(r["loss"])
            state["loss_count"] += 1
            state["tokens"] += int(x.size)
            state["step"] = done = step + 1
            if done % every == 0 or done == steps:
                now = time.perf_counter()
                row = {"step": done, "loss": state["loss_sum"] / state["loss_count"], **_eval(trainer, eval_set),
                       "tokens_per_s": (state["tokens"] - tokens_last) / max(now - t_last, 1e-9),
                       "time": now + time_base}
                state.update(loss_sum=0.0, loss_count=0)
                t_last, tokens_last = time.perf_counter(), state["tokens"]
                if metrics is not None:
                    metrics.write(json.dumps(row) + "\n")
                    metrics.flush()
                rows.append(row)
                if progress is not None:
                    progress.log(row)
            if (ck and done % ck == 0) or done == steps:
                state["time"] = time.perf_counter() + time_base
                _save_checkpoint(out, trainer, {**state, "train_rng": train_rng.bit_generator.state})
            if progress is not None:
                progress.update(done, float(r["loss"]))
    finally:
        if metrics is not None:
            metrics.close()
        if progress is not None:
            progress.stop()
    return rows


__all__ = ["AUX_WEIGHTS", "TrainConfig", "Trainer", "train", "lr_at", "atomic", "check_model", "latest_checkpoint",
           "read_metrics", "write_json", "run_record", "check_resume", "RUN", "METRICS", "CHECKPOINT", "STATE"]
