"""Which kernel each mixer kind of a model runs, per device: what ``hybridc describe --kernels`` prints.

Each layer module declares what it runs (``layers/<kind>.py``: ``OP``, an op name, or ``KERNEL``, a fixed
(name, why)); an op's choice is its `Op` (``ops/<op>/__init__.py``), the same object the layers' calls dispatch
through, so the table cannot drift from what runs. Nothing is compiled or launched: a GPU row says what ``auto``
would pick for a CUDA tensor, whether or not this machine has one.
"""
from __future__ import annotations

import importlib

from hybridc_native.choice import plan_rows

from .ops import OPS

__all__ = ["DEVICES", "kernel_of", "plan"]

DEVICES = ("cpu", "cuda")


def kernel_of(kind: str):
    """The `Op` a kind's layer runs, or its fixed (name, why)."""
    layer = importlib.import_module(f"{__package__}.layers.{kind}")
    return OPS[layer.OP] if hasattr(layer, "OP") else layer.KERNEL


def plan(model, devices=DEVICES) -> list[dict]:
    """One row per mixer kind: its layers, the recurrence and the implementation per device."""
    return plan_rows(model, devices, kernel_of)
