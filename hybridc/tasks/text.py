"""Byte-level next-token prediction on a local file: the sanity task everyone knows.

Each example is a window of seq_len + 1 consecutive bytes at a uniformly random offset; inputs are its first
seq_len bytes, labels its last seq_len (every position scored). Vocabulary 256 (the byte values).
"""
from __future__ import annotations

from pathlib import Path

from .base import Task


class Text(Task):
    name = "text"
    defaults = {"path": None, "seq_len": 256}
    source = "byte-level language modelling (char-rnn, nanoGPT's shakespeare_char style)"

    def _setup(self) -> None:
        o = self.options
        self.need(o["path"] is not None, "needs a file: option 'path'", "e.g. make_task('text', path='input.txt')")
        self.need(o["seq_len"] >= 1, f"seq_len must be at least 1, got {o['seq_len']}")
        path = Path(o["path"]).expanduser()
        self.need(path.is_file(), f"no such file: {o['path']}")
        self.size = path.stat().st_size
        self.need(self.size > o["seq_len"],
                  f"{o['path']} has {self.size} bytes, fewer than seq_len + 1 = {o['seq_len'] + 1}",
                  "use a longer file or a smaller seq_len")
        self.path, self._data = path, None
        self.vocab, self.seq_len = 256, o["seq_len"]

    @property
    def data(self):
        if self._data is None:
            import numpy as np

            self._data = np.fromfile(self.path, dtype=np.uint8)  # (N,)
        return self._data

    def batch(self, rng, size: int):
        import numpy as np

        L = self.seq_len
        starts = rng.integers(0, self.size - L, size)  # (B,)
        windows = self.data[starts[:, None] + np.arange(L + 1)].astype(np.int64)  # (B, L+1)
        return windows[:, :-1], windows[:, 1:]
