"""GRU mixer: a single-layer gated recurrent unit with torch.nn.GRU's parameterization and fused kernel.

Paper: Cho et al., "Learning Phrase Representations using RNN Encoder-Decoder for Statistical Machine Translation"
(EMNLP 2014). Reference implementation: torch.nn.GRU (gate order r, z, n; PyTorch docs):
    r_t = sigmoid(W_ir x_t + b_ir + W_hr h_{t-1} + b_hr)
    z_t = sigmoid(W_iz x_t + b_iz + W_hz h_{t-1} + b_hz)
    n_t = tanh(W_in x_t + b_in + r_t * (W_hn h_{t-1} + b_hn))
    h_t = (1 - z_t) * n_t + z_t * h_{t-1}
The layer output is h_t, projected back to the model dim by ``out_proj`` when hidden != dim.

Glossary of dimension letters:
    B: batch    L: sequence length    D: model dim    H: hidden size
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["GRU", "LAYER", "KERNEL"]


class GRU(nn.Module):
    """GRU mixer. spec: hidden (H). Parameters named as nn.GRU's (weight_ih_l0, ...), plus out_proj if H != D."""

    def __init__(self, dim: int, spec, *, impl: str = "auto"):
        super().__init__()
        if impl not in ("auto", "reference"):
            raise ValueError(f"unknown gru impl {impl!r}; valid: ['auto', 'reference']")
        self.dim, self.hidden, self.impl = dim, int(spec.hidden), impl
        H = self.hidden
        # Same registration order and init as nn.GRU(dim, H): every tensor ~ U(-1/sqrt(H), 1/sqrt(H)).
        self.weight_ih_l0 = nn.Parameter(torch.empty(3 * H, dim))
        self.weight_hh_l0 = nn.Parameter(torch.empty(3 * H, H))
        self.bias_ih_l0 = nn.Parameter(torch.empty(3 * H))
        self.bias_hh_l0 = nn.Parameter(torch.empty(3 * H))
        bound = 1.0 / math.sqrt(H)
        for p in (self.weight_ih_l0, self.weight_hh_l0, self.bias_ih_l0, self.bias_hh_l0):
            nn.init.uniform_(p, -bound, bound)
        self.out_proj = nn.Linear(H, dim, bias=False) if H != dim else None

    def _weights(self) -> list[torch.Tensor]:
        return [self.weight_ih_l0, self.weight_hh_l0, self.bias_ih_l0, self.bias_hh_l0]

    def init_state(self, batch_size: int, device=None, dtype=torch.float32) -> dict[str, torch.Tensor]:
        h_dtype = torch.float64 if dtype == torch.float64 else torch.float32
        return {"h": torch.zeros(batch_size, self.hidden, device=device, dtype=h_dtype)}  # (B, H)

    def _run(self, x, h0):
        """Fused torch GRU kernel. x (B, L, D); h0 (B, H). Returns (h_seq (B, L, H), h_last (B, H))."""
        h_seq, h_n = torch.gru(x, h0[None].to(x.dtype), self._weights(), True, 1, 0.0, self.training,
                               False, True)  # (B, L, H), (1, B, H)
        return h_seq, h_n[0]

    def _project(self, h):
        return h if self.out_proj is None else self.out_proj(h)

    def forward(self, x, state=None, ctx=None):
        batch = x.shape[0]
        h0 = x.new_zeros(batch, self.hidden) if state is None else state["h"]
        if x.shape[1] == 0:
            return x.new_zeros(batch, 0, self.dim), None if state is None else {"h": state["h"]}
        h_seq, h_last = self._run(x, h0)
        out = self._project(h_seq)  # (B, L, D)
        return out, None if state is None else {"h": h_last.to(state["h"].dtype)}

    def step(self, x_t, state, ctx=None):
        h_seq, h_last = self._run(x_t[:, None], state["h"])  # (B, 1, H), (B, H)
        return self._project(h_seq[:, 0]), {"h": h_last.to(state["h"].dtype)}


LAYER = GRU
KERNEL = ("torch.gru", "torch's fused GRU kernel")  # what it runs (`describe --kernels`: hybridc_torch.plan)
