"""PyTorch backend for hybridc: `hybridc.build(model, backend="torch")` returns a `HybridModel` (an nn.Module).

Registered under the entry-point group `hybridc.backends` as `torch`.
"""
from __future__ import annotations

import time

import torch

from .generate import generate
from .model import HybridModel, state_bytes

__all__ = ["backend", "build", "generate", "HybridModel", "state_bytes"]


def build(model, *, impl: str = "auto", device=None, dtype=None) -> HybridModel:
    """Lower a resolved hybridc `Model` to an nn.Module (deterministic under `torch.manual_seed`)."""
    net = HybridModel(model, impl=impl)
    if device is not None or dtype is not None:
        net = net.to(device=device, dtype=dtype)
    return net


def example_input(model, batch: int = 2, length: int = 16):
    if model.vocab is not None:
        return torch.randint(0, model.vocab, (batch, length))
    return torch.randn(batch, length, model.input)


class _Backend:
    name = "torch"

    def build(self, model, **options):
        return build(model, **options)

    def trainer(self, model, **options):
        """A trainer for `hybridc train` (protocol: hybridc/train/loop.py): AdamW, step/evaluate/save/load."""
        if options.get("distributed"):  # "ddp" | "fsdp" under torchrun (distributed.py)
            from .distributed import trainer
        else:
            options.pop("distributed", None)
            from .train import trainer

        return trainer(model, **options)

    def emit(self, model) -> str:
        from .emit import emit

        return emit(model)

    def kernels(self, model) -> list[dict]:
        """Per mixer kind: the recurrence and the kernel ``impl="auto"`` runs on each device (describe --kernels)."""
        from .plan import plan

        return plan(model)

    def weights_to_numpy(self, module) -> dict:
        """A module's parameters and buffers as numpy arrays (`hybridc.save_weights`)."""
        from .weights import to_numpy

        return to_numpy(module)

    def hf(self):
        """The framework side of Hugging Face checkpoints (hybridc/hf: `load_hf_weights`, `save_hf`)."""
        from .hf import TorchSide

        return TorchSide()

    def load_weights(self, module, arrays: dict):
        """Copy numpy arrays into a module in place (`hybridc.load_weights`)."""
        from .weights import load_arrays

        return load_arrays(module, arrays)

    def check(self, model) -> dict:
        net = build(model).eval()
        x = example_input(model)
        with torch.no_grad():
            t = time.perf_counter()
            y = net(x)
            dt = time.perf_counter() - t
        return {"output_shape": tuple(y.shape), "params": sum(p.numel() for p in net.parameters()), "seconds": dt}


backend = _Backend()
