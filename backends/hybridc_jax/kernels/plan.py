"""Which kernel each mixer kind of a model runs, per device: what ``hybridc describe --kernels`` prints.

The choice is made by the same code the layers call (each kernel module's ``_auto(device)`` and ``_IMPLS`` through
``_dispatch.resolve``), so the table cannot drift from what runs. Nothing is compiled or launched: a GPU row says
what ``auto`` would pick when the default JAX backend is a GPU, whether or not this machine has one.
"""
from __future__ import annotations

import importlib

from hybridc_native.choice import plan_rows

from ._dispatch import resolve

OPS = {"mamba": "selective_scan", "mamba2": "ssd", "rwkv": "rwkv7", "delta_net": "delta_rule",
       "gated_delta_net": "gated_delta_rule", "griffin_lru": "linear_recurrence"}
FIXED = {"attn": ("xla", "jnp einsum + softmax attention, fused by XLA"),
         "gru": ("lax.scan", "lax.scan over a fused GRU cell"), "mlp": (None, "no recurrence")}
DEVICES = ("cpu", "gpu")


def choice(op: str, device: str) -> tuple[str, str]:
    """(implementation name, why) that ``impl="auto"`` picks for `op` on `device`."""
    mod = importlib.import_module(f"{__package__}.{op}")
    name, source = resolve(op, mod._IMPLS, "auto", mod._auto(device))
    return name, ("forced by HYBRIDC_KERNEL" if source != "auto" else f"auto on {device}")


def plan(model, devices=DEVICES) -> list[dict]:
    """One row per mixer kind: its layers, the recurrence and the implementation per device."""
    return plan_rows(model, devices, OPS, FIXED, choice)
