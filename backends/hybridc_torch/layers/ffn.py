"""Feed-forward sub-block: the FFN after a mixer (and, through ``mlp.py``, the `mlp` layer kind, Megatron's `-`).

`up` (F, D)+bias -> activation -> `down` (D, F)+bias, F = int(mult * D); `swiglu` (Shazeer 2020) has
`gate`, `up`, `down` without biases. Activations: gelu (exact), silu, relu, relu2 (squared ReLU, So et al. 2021).
Stateless: `step` is the forward of one position.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

ACTS = {"gelu": F.gelu, "silu": F.silu, "relu": F.relu, "relu2": lambda x: F.relu(x).square()}


def hidden(mult: float, dim: int) -> int:
    return max(1, int(mult * dim))


class FFN(nn.Module):
    """spec: mult, act."""

    def __init__(self, dim: int, spec, *, impl: str = "auto"):
        super().__init__()
        f, self.act = hidden(spec.mult, dim), spec.act
        if spec.act == "swiglu":
            self.gate = nn.Linear(dim, f, bias=False)
            self.up = nn.Linear(dim, f, bias=False)
            self.down = nn.Linear(f, dim, bias=False)
        else:
            self.up = nn.Linear(dim, f)
            self.down = nn.Linear(f, dim)

    def init_state(self, batch_size: int, device=None, dtype=torch.float32) -> dict:
        return {}

    def forward(self, x, state=None, ctx=None):
        if self.act == "swiglu":
            h = F.silu(self.gate(x)) * self.up(x)  # (B, L, F)
        else:
            h = ACTS[self.act](self.up(x))  # (B, L, F)
        return self.down(h), (None if state is None else {})

    def step(self, x_t, state, ctx=None):
        return self.forward(x_t, {}, ctx)
