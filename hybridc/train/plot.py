"""`hybridc plot`: training curves of run folders, and the sweep summary (best accuracy per model against dim or
against inference state bytes: Zoology's figure).

    hybridc plot runs/a runs/b -o curves.png            loss and eval accuracy against step, one line per run
    hybridc plot runs/sweep -o curves.png               a folder of run folders: every run in it
    hybridc plot --summary runs/sweep -o summary.png    best accuracy per model (over learning rates; seeds
                                                        averaged) against dim, or with --x state against the
                                                        state bytes `hybridc describe` gives at the task's seq_len

A run folder is what `hybridc train` writes (run.json, metrics.jsonl). matplotlib (the `[train]` extra) is imported
only here, with the Agg backend: no display needed.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError
from . import COMMANDS
from .loop import METRICS, RUN, read_metrics


@dataclass
class Run:
    """One run folder, read: its metrics rows and what run.json says about it."""

    path: Path
    rows: list
    record: dict

    @property
    def options(self) -> dict:
        return self.record.get("options", {})

    def model(self):
        from ..resolve import load

        return load(self.record["model"], str(self.path / RUN))

    def label(self) -> str:
        m = self.model()
        o = self.options
        return f"{m.name} d{m.dim} lr={o.get('lr', 0):g} seed={o.get('seed', 0)}"


def read_run(path: Path) -> Run:
    rows = read_metrics(path)
    if not rows:
        raise UsageError(f"{path}: no metrics yet ({METRICS} is missing or empty)")
    if not (path / RUN).is_file():
        raise UsageError(f"{path}: {RUN} is missing (not a run folder written by hybridc train)")
    try:
        record = json.loads((path / RUN).read_text())
    except json.JSONDecodeError as e:
        raise UsageError(f"{path / RUN}: not valid JSON ({e})") from None
    return Run(path, rows, record)


def find_runs(dirs) -> list[Run]:
    """Each DIR is a run folder, or a folder of run folders (a sweep's output): the runs, in order."""
    runs = []
    for d in map(Path, dirs):
        if not d.is_dir():
            raise UsageError(f"no such directory: {d}")
        if (d / METRICS).is_file() or (d / RUN).is_file():
            runs.append(read_run(d))
            continue
        inside = sorted(p for p in d.iterdir() if p.is_dir() and (p / METRICS).is_file())
        if not inside:
            raise UsageError(f"{d}: no runs here: neither {METRICS} nor run folders holding one "
                             "(run hybridc train --out DIR or hybridc sweep first)")
        runs.extend(read_run(p) for p in inside)
    return runs


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise UsageError("plots need matplotlib: pip install 'hybridc[train]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, out) -> None:
    out = Path(out)
    if not out.parent.is_dir():
        raise UsageError(f"-o {out}: no such directory: {out.parent}")
    try:
        fig.savefig(out, dpi=120, bbox_inches="tight")
    except ValueError as e:  # an extension matplotlib cannot write
        raise UsageError(f"-o {out}: {e}") from None


def plot_curves(runs: list[Run], out, *, title: str | None = None) -> None:
    """Train loss (solid) and eval loss (dashed) against step; eval accuracy against step; one colour per run."""
    plt = _pyplot()
    labels = [r.label() for r in runs]
    if len(set(labels)) < len(labels):  # the same model and options in two folders: tell them apart
        labels = [f"{lab} ({r.path.name})" for lab, r in zip(labels, runs)]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(12, 4.5))
    for i, (run, label) in enumerate(zip(runs, labels)):
        color = f"C{i % 10}"
        steps = [r["step"] for r in run.rows]
        ax_loss.plot(steps, [r["loss"] for r in run.rows], color=color, label=label)
        ax_loss.plot(steps, [r["eval_loss"] for r in run.rows], color=color, linestyle="--", linewidth=1)
        ax_acc.plot(steps, [r["accuracy"] for r in run.rows], color=color, label=label)
    ax_loss.set(ylabel="loss (train solid, eval dashed)")
    ax_acc.set(ylabel="eval accuracy", ylim=(0, 1.02))
    for ax in (ax_loss, ax_acc):
        ax.xaxis.set_label_text("step")
    tasks = sorted({str(r.record.get("task")) for r in runs})
    fig.suptitle(title or f"task {', '.join(tasks)}")
    ax_acc.legend(fontsize=7, loc="best")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
    _save(fig, out)
    plt.close(fig)


def summarize(runs: list[Run]) -> list[dict]:
    """Per (model, dim): the best learning rate's accuracy, each run's best eval accuracy averaged over seeds; and
    the model's inference state bytes (fp32) at the task's seq_len, from describe."""
    from ..summary import describe

    groups: dict = {}
    for run in runs:
        m = run.model()
        context = int(run.record.get("task_options", {}).get("seq_len") or 2048)
        key = (m.name, m.dim)
        if key not in groups:
            info = describe(m, context=context)
            groups[key] = {"model": m.name, "dim": m.dim, "context": context, "lrs": {},
                           "state_bytes": info["state_bytes"], "params": info["params"]}
        g = groups[key]
        g["lrs"].setdefault(run.options.get("lr"), []).append(max(r["accuracy"] for r in run.rows))
    out = []
    for g in groups.values():
        means = {lr: sum(v) / len(v) for lr, v in g.pop("lrs").items()}
        lr = max(means, key=means.get)
        out.append({**g, "accuracy": means[lr], "lr": lr, "runs": len(means)})
    return sorted(out, key=lambda r: (r["model"], r["dim"]))


_X = {"dim": "dim", "state": "state_bytes"}


def _bytes(v: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if v < 1024 or unit == "GiB":
            return f"{v:.0f} {unit}" if v == int(v) else f"{v:.1f} {unit}"
        v /= 1024
    return ""


def plot_summary(rows: list[dict], out, *, x: str = "dim", title: str | None = None) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    models = sorted({r["model"] for r in rows})
    for i, name in enumerate(models):
        mine = sorted((r for r in rows if r["model"] == name), key=lambda r: (r[_X[x]], r["dim"]))
        xs, ys = [r[_X[x]] for r in mine], [r["accuracy"] for r in mine]
        ax.plot(xs, ys, marker="o", color=f"C{i % 10}", label=name)
        if x == "state":  # which dim each point is
            for r, xv, yv in zip(mine, xs, ys):
                ax.annotate(f"d{r['dim']}", (xv, yv), textcoords="offset points", xytext=(3, 4), fontsize=7)
    from matplotlib.ticker import FuncFormatter, NullFormatter

    ticks = sorted({r[_X[x]] for r in rows})
    ax.set_xscale("log")
    if x == "state" and len(ticks) > 6:  # many sizes: powers of 4 bytes (one tick per point would overlap)
        lo, hi = math.floor(math.log(ticks[0], 4)), math.ceil(math.log(ticks[-1], 4))
        ticks = [4.0 ** k for k in range(lo, hi + 1)]
    ax.set_xticks(ticks)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: str(int(v)) if x == "dim" else _bytes(v)))
    ax.xaxis.set_minor_formatter(NullFormatter())
    if x == "dim":
        ax.xaxis.set_label_text("model dimension")
    else:
        ctx = sorted({r["context"] for r in rows})
        ax.xaxis.set_label_text(f"inference state per sequence (fp32, context {', '.join(map(str, ctx))})")
        ax.tick_params(axis="x", labelrotation=30)
    ax.set(ylabel="best eval accuracy", ylim=(0, 1.02))
    ax.margins(x=0.08)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title or "best accuracy over learning rates")
    _save(fig, out)
    plt.close(fig)


def print_summary(rows: list[dict], stream=None) -> None:
    stream = stream or sys.stdout
    print(f"{'model':<24} {'dim':>5} {'params':>10} {'state bytes':>12} {'best lr':>9} {'accuracy':>9}", file=stream)
    for r in rows:
        print(f"{r['model']:<24} {r['dim']:>5} {r['params']:>10,} {r['state_bytes']:>12,} {r['lr']:>9g} "
              f"{r['accuracy']:>9.3f}", file=stream)


def cmd_plot(a) -> int:
    runs = find_runs(a.dirs)
    if a.summary:
        rows = summarize(runs)
        plot_summary(rows, a.output, x=a.x, title=a.title)
        print_summary(rows)
    else:
        plot_curves(runs, a.output, title=a.title)
    print(f"wrote {a.output} ({len(runs)} run{'s' * (len(runs) != 1)})", file=sys.stderr)
    return 0


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("plot", help=COMMANDS["plot"][1],
                       description="Loss and eval accuracy against step for each run folder (a folder of run "
                       "folders, e.g. a sweep's output, stands for every run in it). With --summary: the best "
                       "eval accuracy per model against dim, or against inference state bytes (--x state).")
    p.add_argument("dirs", nargs="+", metavar="DIR", help="run folders (hybridc train --out) or folders of them")
    p.add_argument("-o", "--output", required=True, metavar="FIG", help="the figure file (.png, .pdf, .svg)")
    p.add_argument("--summary", action="store_true", help="best accuracy per model and dim (over learning rates)")
    p.add_argument("--x", choices=("dim", "state"), default="dim",
                   help="summary x axis: model dim (default) or inference state bytes at the task's seq_len")
    p.add_argument("--title", help="the figure's title")
    p.set_defaults(fn=cmd_plot)
    return p
