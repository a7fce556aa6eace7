"""Griffin / Hawk recurrent block with the Real-Gated Linear Recurrent Unit (RG-LRU).

Paper: De et al., "Griffin: Mixing Gated Linear Recurrences with Local Attention for Efficient Language Models"
(2024), Sec. 2.4 and Fig. 2. Reference implementation: google-deepmind/recurrentgemma, torch port
(recurrentgemma/torch/modules.py ``RecurrentBlock``, recurrentgemma/torch/layers.py ``RGLRU``, ``Conv1D``,
``BlockDiagonalLinear``): parameter names, shapes, inits and the RG-LRU math follow it; numerically checked against
transformers' ``RecurrentGemmaRecurrentBlock`` (a port of the same code).

    y   = gelu_tanh(linear_y(x))                        gate branch
    u   = conv_1d(linear_x(x))                          causal depthwise conv, width K
    i_t = sigmoid(input_gate(u_t)),  r_t = sigmoid(a_gate(u_t))       block-diagonal (heads blocks)
    log a_t = -8 * r_t * softplus(a_param)
    h_t = a_t * h_{t-1} + sqrt(1 - a_t^2) * (i_t * u_t)     at absolute position 0: h_0 = i_0 * u_0
    out = linear_out(h * y)

Glossary of dimension letters:
    B: batch    L: sequence length    D: model dim    W: recurrence width    M: heads (blocks)    K: conv width
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..ops.linear_recurrence import linear_recurrence, linear_recurrence_step
from ._conv import causal_conv1d
from .mamba import recurrent_dtype

__all__ = ["GriffinLRU", "RGLRU", "BlockDiagonalLinear", "Conv1D", "LAYER", "OP"]

C_EXPONENT = 8.0          # the constant c in log a_t = -c * r_t * softplus(a_param)
MAX_SQRT_GRADIENT = 1000.0


class _SqrtBoundDerivative(torch.autograd.Function):
    """sqrt(x) whose gradient is clipped at MAX_SQRT_GRADIENT (recurrentgemma's ``SqrtBoundDerivative``)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.sqrt(x)

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        return grad_output / torch.sqrt(torch.clamp(4.0 * x, min=1.0 / MAX_SQRT_GRADIENT ** 2))


class BlockDiagonalLinear(nn.Module):
    """y = x W_blockdiag + b; w (M, W/M, W/M) ~ N(0, 1/(W/M)), b (M, W/M) zeros."""

    def __init__(self, width: int, num_blocks: int):
        super().__init__()
        self.num_blocks, self.block_width = num_blocks, width // num_blocks
        self.w = nn.Parameter(torch.empty(num_blocks, self.block_width, self.block_width))
        self.b = nn.Parameter(torch.zeros(num_blocks, self.block_width))
        nn.init.normal_(self.w, mean=0.0, std=math.sqrt(1.0 / self.block_width))

    def forward(self, x):
        xb = x.unflatten(-1, (self.num_blocks, self.block_width))  # (..., M, W/M)
        return (torch.einsum("...hi,hij->...hj", xb, self.w) + self.b).flatten(-2)  # (..., W)


class Conv1D(nn.Module):
    """Causal depthwise temporal conv: out_t = b + sum_s w[K-1-s] * x_{t-s}; w (K, W) ~ N(0, 0.01/K), b zeros."""

    def __init__(self, width: int, temporal_width: int):
        super().__init__()
        self.w = nn.Parameter(torch.empty(temporal_width, width))
        self.b = nn.Parameter(torch.zeros(width))
        nn.init.normal_(self.w, mean=0.0, std=math.sqrt(0.01 / temporal_width))

    def forward(self, x, conv_state=None):
        """x (B, W, L); conv_state (B, W, K-1) -> (y (B, W, L), new_conv_state (B, W, K-1))."""
        return causal_conv1d(x, self.w.t(), self.b, conv_state)


class RGLRU(nn.Module):
    """Real-Gated Linear Recurrent Unit; a_param (W,) init so a = exp(-softplus(a_param)) has a^2 ~ U[0.81, 0.998]."""

    def __init__(self, width: int, num_heads: int, *, impl: str = "auto"):
        super().__init__()
        self.impl = impl
        self.a_param = nn.Parameter(torch.empty(width))
        self.input_gate = BlockDiagonalLinear(width, num_heads)
        self.a_gate = BlockDiagonalLinear(width, num_heads)
        with torch.no_grad():  # ring radius r with r^2 ~ U[0.9^2, 0.999^2]; a_param = softplus^-1(-log r)
            r2 = torch.empty(width).uniform_(0.9 ** 2 + 1e-8, 0.999 ** 2 + 1e-8)
            self.a_param.copy_(torch.log(torch.expm1(-0.5 * torch.log(r2))))

    def _gates(self, u, reset):
        """u (..., W); reset (...,) bool -> decay a (..., W) and normalized input (..., W), both in fp32."""
        acc = recurrent_dtype(u.dtype)
        gate_x = torch.sigmoid(self.input_gate(u)).to(acc)
        gate_a = torch.sigmoid(self.a_gate(u)).to(acc)
        log_a = -C_EXPONENT * gate_a * F.softplus(self.a_param.to(acc))  # (..., W)
        multiplier = _SqrtBoundDerivative.apply(1.0 - torch.exp(2.0 * log_a))  # (..., W)
        keep = (~reset)[..., None]
        multiplier = torch.where(keep, multiplier, torch.ones_like(multiplier))
        a = torch.exp(log_a) * keep  # reset zeroes the decay, as recurrentgemma's rnn_scan does
        return a, u.to(acc) * gate_x * multiplier

    def forward(self, u, reset, h0=None):
        """u (B, L, W); reset (B, L) bool (True at absolute position 0); h0 (B, W). Returns (h (B, L, W), h_last)."""
        a, xn = self._gates(u, reset)  # (B, L, W) each
        h, h_last = linear_recurrence(a, xn, h0, impl=self.impl)
        return h.to(u.dtype), h_last

    def step(self, u_t, reset, h):
        """u_t (B, W); reset (B,) bool; h (B, W). Returns the new state (B, W)."""
        a, xn = self._gates(u_t, reset)
        return linear_recurrence_step(h, a, xn)  # (B, W)


class GriffinLRU(nn.Module):
    """Griffin recurrent block. spec: width (W), heads (M), conv (K).

    Reset: the RG-LRU resets (decay 0, input multiplier 1) at absolute position 0 only. The absolute position of
    x[:, 0] is ctx["pos_offset"] when given, else state["pos"] (a per-sequence token counter kept in the decode
    state), else 0 (state None). So forward(x) == forward(x, init_state) and decoding needs no ctx.
    """

    def __init__(self, dim: int, spec, *, impl: str = "auto"):
        super().__init__()
        self.dim, self.width, self.heads, self.d_conv = dim, int(spec.width), int(spec.heads), int(spec.conv)
        if self.width % self.heads:
            raise ValueError(f"griffin_lru: width={self.width} must be divisible by heads={self.heads}")
        W = self.width
        self.linear_y = nn.Linear(dim, W)
        self.linear_x = nn.Linear(dim, W)
        self.linear_out = nn.Linear(W, dim)
        self.conv_1d = Conv1D(W, self.d_conv)
        self.rg_lru = RGLRU(W, self.heads, impl=impl)
        with torch.no_grad():  # recurrentgemma RecurrentBlock.reset_parameters
            for lin, fan in ((self.linear_x, dim), (self.linear_y, dim), (self.linear_out, W)):
                nn.init.normal_(lin.weight, mean=0.0, std=math.sqrt(1.0 / fan))
                nn.init.zeros_(lin.bias)

    def init_state(self, batch_size: int, device=None, dtype=torch.float32) -> dict[str, torch.Tensor]:
        W = self.width
        return {
            "conv": torch.zeros(batch_size, W, self.d_conv - 1, device=device, dtype=dtype),  # (B, W, K-1)
            "h": torch.zeros(batch_size, W, device=device, dtype=recurrent_dtype(dtype)),  # (B, W)
            "pos": torch.zeros(batch_size, device=device, dtype=torch.int64),  # (B,) tokens seen so far
        }

    @staticmethod
    def _start(x, state, ctx) -> torch.Tensor:
        """Absolute position (B,) int64 of the first token of x."""
        ctx = ctx or {}
        if "pos_offset" in ctx:
            return torch.full(x.shape[:1], int(ctx["pos_offset"]), dtype=torch.int64, device=x.device)
        if state is not None:
            return state["pos"]
        return torch.zeros(x.shape[:1], dtype=torch.int64, device=x.device)

    def forward(self, x, state=None, ctx=None):
        length = x.shape[1]
        start = self._start(x, state, ctx)  # (B,)
        reset = (start[:, None] + torch.arange(length, device=x.device)) == 0  # (B, L)
        gate = F.gelu(self.linear_y(x), approximate="tanh")  # (B, L, W)
        conv_in = None if state is None else state["conv"]
        u, conv_state = self.conv_1d(self.linear_x(x).transpose(1, 2), conv_in)  # (B, W, L), (B, W, K-1)
        h, h_last = self.rg_lru(u.transpose(1, 2), reset, None if state is None else state["h"])
        out = self.linear_out(h * gate)  # (B, L, D)
        if state is None:
            return out, None
        return out, {"conv": conv_state.to(state["conv"].dtype), "h": h_last, "pos": start + length}

    def step(self, x_t, state, ctx=None):
        start = self._start(x_t, state, ctx)  # (B,)
        gate = F.gelu(self.linear_y(x_t), approximate="tanh")  # (B, W)
        u, conv_state = self.conv_1d(self.linear_x(x_t)[..., None], state["conv"])  # (B, W, 1), (B, W, K-1)
        h = self.rg_lru.step(u[..., 0], start == 0, state["h"])  # (B, W)
        out = self.linear_out(h.to(x_t.dtype) * gate)  # (B, D)
        return out, {"conv": conv_state.to(state["conv"].dtype), "h": h, "pos": start + 1}


LAYER = GriffinLRU
OP = "linear_recurrence"  # the recurrence it runs (`describe --kernels`: hybridc_torch.plan)
