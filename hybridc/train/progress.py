"""What `hybridc train` shows while it runs: a rich progress bar (step, loss, accuracy, tokens/s, ETA), or with
`--quiet` one plain log line per metrics row (for logs and batch jobs)."""
from __future__ import annotations

import sys
from typing import Optional, TextIO


def format_row(row: dict, steps: int) -> str:
    """One metrics row as a log line."""
    return (f"step {row['step']}/{steps}  loss {row['loss']:.4f}  eval_loss {row['eval_loss']:.4f}  "
            f"accuracy {row['accuracy']:.3f}  {row['tokens_per_s']:,.0f} tok/s  {row['time']:.1f}s")


class Progress:
    """The loop calls `start(step, steps, last_row)`, `update(step, loss)` after each step, `log(row)` for each
    metrics row and `stop()` at the end."""

    def __init__(self, *, quiet: bool = False, stream: Optional[TextIO] = None, title: str = "train"):
        self.quiet, self.stream, self.title = quiet, stream or sys.stderr, title
        self.steps = 0
        self._bar = self._task = None
        self._last: dict = {}

    def start(self, step: int, steps: int, last_row: Optional[dict] = None) -> None:
        self.steps = steps
        self._last = dict(last_row or {})
        if self.quiet:
            if step:
                print(f"resuming at step {step}/{steps}", file=self.stream, flush=True)
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress as Bar, TextColumn, TimeRemainingColumn

        self._bar = Bar(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[stats]}"), TimeRemainingColumn(),
                        console=Console(file=self.stream), transient=False)
        self._task = self._bar.add_task(self.title, total=steps, completed=step, stats=self._stats(None))
        self._bar.start()

    def _stats(self, loss: Optional[float]) -> str:
        parts = [] if loss is None else [f"loss {loss:.4f}"]
        if "accuracy" in self._last:
            parts.append(f"acc {self._last['accuracy']:.3f}")
        if "tokens_per_s" in self._last:
            parts.append(f"{self._last['tokens_per_s']:,.0f} tok/s")
        return "  ".join(parts)

    def update(self, step: int, loss: float) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=step, stats=self._stats(loss))

    def log(self, row: dict) -> None:
        self._last = row
        if self.quiet:
            print(format_row(row, self.steps), file=self.stream, flush=True)

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
