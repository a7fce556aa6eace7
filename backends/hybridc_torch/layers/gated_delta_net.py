"""Gated DeltaNet mixer layer (torch).

Paper: Yang, Kautz & Hatamizadeh, "Gated Delta Networks: Improving Mamba2 with Delta Rule" (ICLR 2025,
arXiv:2412.06464).
Reference implementation: flash-linear-attention ``fla/layers/gated_deltanet.py`` (class ``GatedDeltaNet`` with
conv_bias=False, output_gate_activation='swish', norm_eps=1e-5); with v_heads > heads, q and k
are shared by the v_heads / heads value heads of a group (fla's GVA, transformers' ``Qwen3NextGatedDeltaNet``).
Parameter names, shapes, construction order and init (A_log ~ log U(0, 16), dt_bias = softplus^-1 of a log-uniform
dt in [1e-3, 1e-1]) match it, so fla checkpoints map 1:1 by name.

    q = l2norm(silu(conv_q(q_proj x)));  k = l2norm(silu(conv_k(k_proj x)));  v = silu(conv_v(v_proj x))
    g = -exp(A_log) * softplus(a_proj x + dt_bias)   (log decay, fp32);   beta = sigmoid(b_proj x)
    (neg_eigval, fla's allow_neg_eigval: beta = 2 sigmoid(b_proj x), Grazzi et al. 2025, arXiv:2411.12537)
    o = gated_delta_rule(q, k, v, g, beta);  y = o_proj(o_norm(o [, g_proj x]))

Dimension glossary:
    B batch, L sequence length, D model dim, H (key) heads, Hv value heads (v_heads), K key head dim (head_dim),
    V value head dim (v_head_dim, else head_dim * expand_v), W short-conv width.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..ops.gated_delta_rule import gated_delta_rule, gated_delta_rule_step
from .delta_net import _DeltaFamily, out_norm_eps

__all__ = ["GatedDeltaNet", "LAYER", "OP"]

DT_MIN, DT_MAX, DT_INIT_FLOOR = 1e-3, 1e-1, 1e-4


def _value_head_dim(head_dim: int, expand_v) -> int:
    head_v = int(head_dim * expand_v)
    if not math.isclose(head_dim * expand_v, head_v, rel_tol=1e-5):
        raise ValueError(f"GatedDeltaNet: head_dim * expand_v must be an integer, got {head_dim} * {expand_v}")
    return head_v


class GatedDeltaNet(_DeltaFamily):
    """Gated DeltaNet mixer. spec: heads, v_heads, head_dim, expand_v, v_head_dim (None: head_dim * expand_v),
    conv (0 = no short conv), gate (bool), neg_eigval (bool: beta in (0, 2))."""

    def __init__(self, dim: int, spec, *, impl: str = "auto"):
        super().__init__()
        heads, v_heads, head_dim = int(spec.heads), int(spec.v_heads), int(spec.head_dim)
        head_v = int(spec.v_head_dim) if spec.v_head_dim else _value_head_dim(head_dim, spec.expand_v)
        self._setup(dim, heads, head_dim, head_v, int(spec.conv), bool(spec.gate), impl, v_heads=v_heads)
        self.q_proj = nn.Linear(dim, self.key_dim, bias=False)
        self.k_proj = nn.Linear(dim, self.key_dim, bias=False)
        self.v_proj = nn.Linear(dim, self.value_dim, bias=False)
        self.a_proj = nn.Linear(dim, v_heads, bias=False)
        self.b_proj = nn.Linear(dim, v_heads, bias=False)
        self.allow_neg_eigval = bool(spec.neg_eigval)                                 # fla's name
        self._init_decay(v_heads)
        self._build_convs()
        self._build_output(out_norm_eps(spec))

    def _init_decay(self, heads: int):
        A = torch.empty(heads, dtype=torch.float32).uniform_(0, 16)                  # (H,)
        self.A_log = nn.Parameter(torch.log(A))
        self.A_log._no_weight_decay = True
        log_dt = torch.rand(heads) * (math.log(DT_MAX) - math.log(DT_MIN)) + math.log(DT_MIN)
        dt = torch.exp(log_dt).clamp(min=DT_INIT_FLOOR)                              # (H,)
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))               # softplus^-1(dt)
        self.dt_bias._no_weight_decay = True

    def _gates(self, x):
        """x (..., D) -> log decay g (..., Hv) in >= fp32 and beta (..., Hv)."""
        acc = torch.promote_types(x.dtype, torch.float32)
        a = self.a_proj(x).to(acc) + self.dt_bias.to(acc)                            # (..., Hv)
        g = -self.A_log.to(acc).exp() * F.softplus(a)                                # (..., Hv)
        beta = self.b_proj(x).sigmoid()                                              # (..., Hv)
        return g, (2 * beta if self.allow_neg_eigval else beta)

    def forward(self, x, state=None, ctx=None):
        """x (B, L, D) -> (y (B, L, D), new_state or None)."""
        q, k, v, conv_state = self._qkv(x, state, step=False)                        # (B, L, Hv, K/V)
        g, beta = self._gates(x)                                                     # (B, L, Hv)
        o, S = gated_delta_rule(q, k, v, g, beta, initial_state=None if state is None else state["recurrent"],
                                output_final_state=state is not None, impl=self.impl)  # (B, L, Hv, V)
        y = self._out(o, x)                                                          # (B, L, D)
        return y, (None if state is None else {**conv_state, "recurrent": S})

    def step(self, x_t, state, ctx=None):
        """x_t (B, D) -> (y_t (B, D), new_state)."""
        q, k, v, conv_state = self._qkv(x_t, state, step=True)                       # (B, Hv, K/V)
        g, beta = self._gates(x_t)                                                   # (B, Hv)
        o, S = gated_delta_rule_step(q, k, v, g, beta, state["recurrent"])           # (B, Hv, V)
        return self._out(o, x_t), {**conv_state, "recurrent": S}


LAYER = GatedDeltaNet
OP = "gated_delta_rule"  # the recurrence it runs (`describe --kernels`: hybridc_torch.plan)
