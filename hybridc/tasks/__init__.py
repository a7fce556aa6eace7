"""Training tasks: the field's synthetic recall benchmarks (MQAR, MAD) and byte-level text, as next-token batches.

    >>> from hybridc.tasks import make_task
    >>> import numpy as np
    >>> task = make_task("mqar", seq_len=64, num_kv_pairs=4)
    >>> inputs, labels = task.batch(np.random.default_rng(0), 8)   # int64 (8, 64) each; labels -100 unless scored

`TASKS` maps each name to (class, default options). numpy is imported by the generators only.
"""
from __future__ import annotations

from typing import Any

from ..errors import HybridcError, suggest
from .base import IGNORE, Task, resolve_options
from .mad_recall import FuzzyRecall, InContextRecall, NoisyRecall
from .mad_tasks import Compression, Memorization, SelectiveCopying
from .mqar import MQAR
from .text import Text

_CLASSES = (MQAR, InContextRecall, FuzzyRecall, NoisyRecall, SelectiveCopying, Compression, Memorization, Text)
TASKS: dict[str, tuple[type[Task], dict[str, Any]]] = {c.name: (c, dict(c.defaults)) for c in _CLASSES}

__all__ = ["IGNORE", "TASKS", "Task", "make_task"]


def make_task(name: str, **options: Any) -> Task:
    """The task `name` with `options` over its published defaults (an option set to None keeps its default)."""
    if name not in TASKS:
        hint = f"valid tasks: {', '.join(TASKS)}"
        close = suggest(name, TASKS)
        raise HybridcError(f"unknown task '{name}'", hint=f"{hint}; {close}" if close else hint)
    cls, defaults = TASKS[name]
    return cls(**resolve_options(name, defaults, options))
