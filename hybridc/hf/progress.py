"""A progress bar (tensors and bytes) for loading a sharded checkpoint on the CLI (rich, to stderr)."""
from __future__ import annotations


class Bar:
    def __init__(self, tensors: int, nbytes: int):
        from rich.console import Console
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

        self.p = Progress(TextColumn("loading"), BarColumn(), TextColumn("{task.fields[done]}/{task.fields[of]} tensors"),
                          DownloadColumn(), TimeRemainingColumn(), console=Console(stderr=True), transient=True)
        self.p.start()
        self.task = self.p.add_task("load", total=nbytes, done=0, of=tensors)
        self.tensors = 0

    def advance(self, tensors: int, nbytes: int) -> None:
        self.tensors += tensors
        self.p.update(self.task, advance=nbytes, done=self.tensors)

    def close(self) -> None:
        self.p.stop()
