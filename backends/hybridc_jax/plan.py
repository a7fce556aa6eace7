"""Which kernel each mixer kind of a model runs, per device: what ``hybridc describe --kernels`` prints.

Read from the declarations the code itself runs by: each layer module (``layers/<kind>.py``) names its recurrence
(``OP``, an op of `hybridc_jax.ops.OPS`) or the one fixed thing it runs (``KERNEL = (name, why)``), and each op's
`Op` makes the ``auto`` choice the entry point makes, so the table cannot drift from what runs. Nothing is compiled
or launched: a GPU row says what ``auto`` would pick when the default JAX backend is a GPU, whether or not this
machine has one.
"""
from __future__ import annotations

from hybridc_native.choice import plan_rows

from .model import kind_module
from .ops import OPS

__all__ = ["DEVICES", "kernel_of", "plan"]

DEVICES = ("cpu", "gpu")


def kernel_of(kind: str):
    """The `Op` a layer kind runs (its module's ``OP``), or the (name, why) of its fixed ``KERNEL``."""
    layer = kind_module(kind)
    return OPS[layer.OP] if hasattr(layer, "OP") else layer.KERNEL


def plan(model, devices=DEVICES) -> list[dict]:
    """One row per mixer kind: its layers, the recurrence and the implementation per device."""
    return plan_rows(model, devices, kernel_of)
