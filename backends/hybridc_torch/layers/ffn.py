"""Feed-forward sub-block: the FFN after a mixer (and, through ``mlp.py``, the `mlp` layer kind, Megatron's `-`).

Plain: `down(act(up(x)))`; gated (`gated=true`, or `act=swiglu` = silu gated; Shazeer 2020, "GLU Variants Improve
Transformer"): `down(act(gate(x)) * up(x))`, as transformers' LlamaMLP / GemmaMLP. `gate`, `up` (F, D), `down`
(D, F), with biases on all or none (`spec.bias`, settled by the core). F = `spec.hidden`, else int(mult * D).
Activations: gelu (exact), gelu_tanh (transformers' gelu_pytorch_tanh), silu, relu, relu2 (squared ReLU, So et al.
2021; Nemotron-H's MLP). Stateless: `step` is the forward of one position.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

ACTS = {"gelu": F.gelu, "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"), "silu": F.silu, "swiglu": F.silu,
        "relu": F.relu, "relu2": lambda x: F.relu(x).square()}


def hidden(spec, dim: int) -> int:
    return spec.hidden if spec.hidden is not None else max(1, int(spec.mult * dim))


class FFN(nn.Module):
    """spec: mult, act, gated, bias, hidden, gate_scale, down_scale (Falcon-H1's muP mlp_multipliers:
    down(act(gate(x) * gate_scale) * up(x)) * down_scale, as transformers' FalconH1MLP)."""

    def __init__(self, dim: int, spec, *, impl: str = "auto"):
        super().__init__()
        f, self.act = hidden(spec, dim), spec.act
        self.gated = spec.gated or spec.act == "swiglu"
        if self.gated:
            self.gate = nn.Linear(dim, f, bias=spec.bias)
        self.up = nn.Linear(dim, f, bias=spec.bias)
        self.down = nn.Linear(f, dim, bias=spec.bias)
        self.gate_scale, self.down_scale = float(spec.gate_scale), float(spec.down_scale)

    def init_state(self, batch_size: int, device=None, dtype=torch.float32) -> dict:
        return {}

    def forward(self, x, state=None, ctx=None):
        if self.gated:
            g = self.gate(x)  # (B, L, F)
            h = ACTS[self.act](g * self.gate_scale if self.gate_scale != 1.0 else g) * self.up(x)  # (B, L, F)
        else:
            h = ACTS[self.act](self.up(x))  # (B, L, F)
        y = self.down(h)  # (B, L, D)
        return (y * self.down_scale if self.down_scale != 1.0 else y), (None if state is None else {})

    def step(self, x_t, state, ctx=None):
        return self.forward(x_t, {}, ctx)
