"""DeltaNet mixer layer (torch).

Paper: Yang et al., "Parallelizing Linear Transformers with the Delta Rule over Sequence Length" (NeurIPS 2024,
arXiv:2406.06484); the delta rule itself: Schlag et al. 2021 (arXiv:2102.11174).
Reference implementation: flash-linear-attention ``fla/layers/delta_net.py`` (class ``DeltaNet`` with its defaults
qk_activation='silu', qk_norm='l2', use_beta=True, conv_bias=False, norm_eps=1e-5). Parameter names, shapes and init
match it, so fla checkpoints map 1:1 by name.

    q = l2norm(silu(conv_q(q_proj x)));  k = l2norm(silu(conv_k(k_proj x)));  v = silu(conv_v(v_proj x))
    beta = sigmoid(b_proj x);  o = delta_rule(q, k, v, beta);  y = o_proj(o_norm(o [, g_proj x]))

This module also holds the pieces shared with Gated DeltaNet: ``l2norm``, ``GatedRMSNorm`` and ``_DeltaFamily``.

Dimension glossary:
    B batch, L sequence length, D model dim, H heads, K key head dim, V value head dim,
    W short-conv width.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..ops.delta_rule import delta_rule, delta_rule_step
from ._shortconv import ShortConvolution

__all__ = ["DeltaNet", "GatedRMSNorm", "l2norm", "LAYER", "OP"]

NORM_EPS = 1e-5  # fla's norm_eps; the model's `norm eps=` replaces it (spec.norm_eps, `out_norm_eps`)


def out_norm_eps(spec) -> float:
    """The output norm's eps: the model's `norm eps=` when written (transformers' rms_norm_eps), else fla's 1e-5."""
    eps = getattr(spec, "norm_eps", None)
    return NORM_EPS if eps is None else float(eps)


def l2norm(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """fla's l2norm (``fla/modules/l2norm.py``): x / sqrt(sum(x^2) + eps) over the last dim."""
    return x * torch.rsqrt(x.square().sum(-1, keepdim=True) + eps)


class GatedRMSNorm(nn.Module):
    """fla's ``FusedRMSNormGated`` (swish gate, norm before gate): rmsnorm(x) * weight * silu(g)."""

    def __init__(self, hidden_size: int, eps: float = NORM_EPS):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(hidden_size))

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        rstd = torch.rsqrt(x.square().mean(-1, keepdim=True) + self.eps)
        return x * rstd * self.weight * F.silu(g)


class _DeltaFamily(nn.Module):
    """Shared plumbing: q/k/v projections + short convs, output norm + projection, init_state."""

    def _setup(self, dim, heads, head_k, head_v, conv, gate, impl, v_heads=0):
        """v_heads: value heads (0: heads), a multiple of heads; q and k are shared within a group (fla's GVA)."""
        v_heads = v_heads or heads
        if min(dim, heads, head_k, head_v) <= 0 or conv < 0 or v_heads % heads:
            raise ValueError(f"{type(self).__name__}: dim/heads/head dims must be > 0, conv >= 0 and v_heads a "
                             f"multiple of heads, got dim={dim} heads={heads} v_heads={v_heads} head_k={head_k} "
                             f"head_v={head_v} conv={conv}")
        self.dim, self.num_heads, self.head_k_dim, self.head_v_dim = dim, heads, head_k, head_v
        self.num_v_heads = v_heads
        self.key_dim, self.value_dim = heads * head_k, v_heads * head_v
        self.conv_size, self.use_gate, self.impl = conv, gate, impl

    def _build_convs(self):
        if self.conv_size > 0:
            self.q_conv1d = ShortConvolution(self.key_dim, self.conv_size, activation="silu")
            self.k_conv1d = ShortConvolution(self.key_dim, self.conv_size, activation="silu")
            self.v_conv1d = ShortConvolution(self.value_dim, self.conv_size, activation="silu")

    def _build_output(self, eps: float = NORM_EPS):
        if self.use_gate:
            self.g_proj = nn.Linear(self.dim, self.value_dim, bias=False)
            self.o_norm = GatedRMSNorm(self.head_v_dim, eps=eps)
        else:
            self.o_norm = nn.RMSNorm(self.head_v_dim, eps=eps)
        self.o_proj = nn.Linear(self.value_dim, self.dim, bias=False)

    def init_state(self, batch_size: int, device=None, dtype=torch.float32) -> dict[str, torch.Tensor]:
        state = {}
        if self.conv_size > 0:
            for name, conv in (("q", self.q_conv1d), ("k", self.k_conv1d), ("v", self.v_conv1d)):
                state[f"conv_{name}"] = conv.init_state(batch_size, device, dtype)   # (B, C, W-1)
        acc = torch.promote_types(dtype, torch.float32)
        state["recurrent"] = torch.zeros(batch_size, self.num_v_heads, self.head_k_dim, self.head_v_dim,
                                         device=device, dtype=acc)                  # (B, Hv, K, V)
        return state

    def _qkv(self, x, state, step: bool):
        """x (B, L, D) or (B, D) when step. Returns q, k (..., Hv, K) (each key head repeated over its value
        heads), v (..., Hv, V), new conv states."""
        new_state, outs = {}, []
        for name in ("q", "k", "v"):
            p = getattr(self, f"{name}_proj")(x)                                     # (..., C)
            if self.conv_size == 0:
                outs.append(F.silu(p))
                continue
            conv, key = getattr(self, f"{name}_conv1d"), f"conv_{name}"
            cache = None if state is None else state[key]
            y, new_state[key] = conv.step(p, cache) if step else conv(p, cache)
            outs.append(y)                                                           # (..., C)
        q, k, v = outs
        q = l2norm(q.unflatten(-1, (self.num_heads, self.head_k_dim)))              # (..., H, K)
        k = l2norm(k.unflatten(-1, (self.num_heads, self.head_k_dim)))              # (..., H, K)
        v = v.unflatten(-1, (self.num_v_heads, self.head_v_dim))                     # (..., Hv, V)
        if self.num_v_heads != self.num_heads:
            r = self.num_v_heads // self.num_heads
            q, k = q.repeat_interleave(r, dim=-2), k.repeat_interleave(r, dim=-2)    # (..., Hv, K)
        return q, k, v, new_state

    def _out(self, o, x):
        """o (..., Hv, V), x (..., D) -> y (..., D)."""
        if self.use_gate:
            g = self.g_proj(x).unflatten(-1, (self.num_v_heads, self.head_v_dim))   # (..., Hv, V)
            o = self.o_norm(o, g)
        else:
            o = self.o_norm(o)
        return self.o_proj(o.flatten(-2))                                            # (..., D)


class DeltaNet(_DeltaFamily):
    """DeltaNet mixer. spec: heads, head_dim (key = value head dim), conv (0 = no short conv), gate (bool)."""

    def __init__(self, dim: int, spec, *, impl: str = "auto"):
        super().__init__()
        heads, head_dim = int(spec.heads), int(spec.head_dim)
        self._setup(dim, heads, head_dim, head_dim, int(spec.conv), bool(spec.gate), impl)
        self.q_proj = nn.Linear(dim, self.key_dim, bias=False)
        self.k_proj = nn.Linear(dim, self.key_dim, bias=False)
        self.v_proj = nn.Linear(dim, self.value_dim, bias=False)
        self.b_proj = nn.Linear(dim, heads, bias=False)
        self._build_convs()
        self._build_output(out_norm_eps(spec))

    def forward(self, x, state=None, ctx=None):
        """x (B, L, D) -> (y (B, L, D), new_state or None)."""
        q, k, v, conv_state = self._qkv(x, state, step=False)                        # (B, L, H, K/V)
        beta = self.b_proj(x).sigmoid()                                              # (B, L, H)
        o, S = delta_rule(q, k, v, beta, initial_state=None if state is None else state["recurrent"],
                          output_final_state=state is not None, impl=self.impl)     # (B, L, H, V)
        y = self._out(o, x)                                                          # (B, L, D)
        return y, (None if state is None else {**conv_state, "recurrent": S})

    def step(self, x_t, state, ctx=None):
        """x_t (B, D) -> (y_t (B, D), new_state)."""
        q, k, v, conv_state = self._qkv(x_t, state, step=True)                       # (B, H, K/V)
        beta = self.b_proj(x_t).sigmoid()                                            # (B, H)
        o, S = delta_rule_step(q, k, v, beta, state["recurrent"])                    # (B, H, V)
        return self._out(o, x_t), {**conv_state, "recurrent": S}


LAYER = DeltaNet
OP = "delta_rule"  # the recurrence it runs (`describe --kernels`: hybridc_torch.plan)
