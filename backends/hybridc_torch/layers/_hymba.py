"""Hymba's fused hybrid-head block (`fusion hymba` on a `mamba|attn` parallel block).

Paper: Dong et al., "Hymba: A Hybrid-head Architecture for Small Language Models" (2024, arXiv:2411.13676), Sec. 2.1,
Eq. 1-2: Y = W_out(beta_1 * norm(M_attn X) + beta_2 * norm(M_ssm X)) / 2 over one input projection.
Reference: nvidia/Hymba-1.5B-Base's remote code, modeling_hymba.py `HymbaBlock` (cuda_kernels_forward): in_proj gives
[q | k | v | x | z] (k, v absent in a kv_reuse layer), the attention heads (no projections of their own, values E/H
wide) and the Mamba-1 SSM heads (conv + selective scan gated by silu(z)) run side by side, each output is RMSNormed
with its own weight (pre_avg_layernorm1 on attention, 2 on the SSM; here norm_attn, norm_ssm), averaged, out_proj.
Costs and checks: hybridc/hymba.py. Cross-layer KV sharing goes through `Attention.attend_heads` (ctx["kv"]).

Glossary: B batch, L steps, D model dim, E inner width, H heads, G kv heads, hd head_dim, Ev = E / H.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..ops.selective_scan import selective_scan
from ._conv import causal_conv1d
from .attn import Attention, partial_rope
from .mamba import Mamba


class HymbaHeads(Attention):
    """The attention heads of a fused block: Attention's masks, cache and KV sharing, without its projections."""

    def __init__(self, spec, v_dim: int):
        super().__init__(1, spec)  # its settings and QK-norms; the (tiny) projections are dropped
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            if hasattr(self, name):
                delattr(self, name)
        self.v_dim = v_dim

    def heads(self, q, k, v, pos):
        """(B, L, H*hd), (B, L, G*hd) and (B, L, G*Ev) or None -> (B, H, L, hd), (B, G, L, hd), (B, G, L, Ev)."""
        b, l, _ = q.shape
        q = self.position_q(q.view(b, l, self.h, self.e).transpose(1, 2), pos)
        if k is None:
            return q, None, None
        k = k.view(b, l, self.g, self.e).transpose(1, 2)
        k = self.k_norm(k) if hasattr(self, "k_norm") else k  # per head (fusion hymba allows no qk_norm=proj)
        k = partial_rope(k, pos, self.spec.rope_base, self.rot) if self.spec.rope else k
        return q, k, v.view(b, l, self.g, self.v_dim).transpose(1, 2)


class HymbaMixer(nn.Module):
    """specs: (mamba spec, attn spec); make_norm(width) -> the model's norm at that width."""

    def __init__(self, dim: int, specs, make_norm, impl: str = "auto"):
        super().__init__()
        ssm_spec, attn_spec = specs
        self.ssm = Mamba(dim, ssm_spec, impl=impl)
        del self.ssm.in_proj, self.ssm.out_proj  # the fused block's in_proj / out_proj replace them
        e = self.ssm.d_inner
        self.attn = HymbaHeads(attn_spec, e // attn_spec.heads)
        g, hd, ev = attn_spec.kv_heads, attn_spec.head_dim, e // attn_spec.heads
        self.widths = [attn_spec.heads * hd, *(() if attn_spec.kv_reuse else (g * hd, g * ev)), e, e]  # q k v x z
        self.in_proj = nn.Linear(dim, sum(self.widths), bias=ssm_spec.proj_bias)
        self.out_proj = nn.Linear(e, dim, bias=ssm_spec.proj_bias)
        self.norm_attn, self.norm_ssm = make_norm(e), make_norm(e)

    def init_state(self, batch_size: int, device=None, dtype=torch.float32) -> dict:
        return {"ssm": self.ssm.init_state(batch_size, device, dtype),
                "attn": self.attn.init_state(batch_size, device, dtype)}

    def _scan(self, xi, z, state):
        """The SSM heads: xi, z (B, L, E) -> y (B, L, E), new state (as Mamba.forward, without its projections)."""
        m = self.ssm
        xc, conv_state = causal_conv1d(xi.transpose(1, 2), m.conv1d.weight[:, 0], m.conv1d.bias,
                                       None if state is None else state["conv"])
        xc = F.silu(xc)  # (B, E, L)
        dt, B, C = m._ssm_inputs(xc.transpose(1, 2))  # (B, L, E), (B, L, N), (B, L, N)
        y, ssm_state = selective_scan(
            xc, dt.transpose(1, 2), m._A(), B.transpose(1, 2), C.transpose(1, 2), D=m.D, z=z.transpose(1, 2),
            delta_bias=m.dt_proj.bias, delta_softplus=True, return_last_state=True,
            initial_state=None if state is None else state["ssm"], impl=m.impl)  # (B, E, L), (B, E, N)
        y = y.transpose(1, 2).to(xi.dtype)
        if state is None:
            return y, None
        return y, {"conv": conv_state.to(state["conv"].dtype), "ssm": ssm_state}

    def forward(self, x, state=None, ctx=None):
        """x (B, L, D) normed -> (y (B, L, D), new_state or None)."""
        ctx = {} if ctx is None else ctx
        start = ctx.get("pos", 0)
        pos = torch.arange(start, start + x.shape[1], device=x.device)  # (L,)
        parts = self.in_proj(x).split(self.widths, dim=-1)
        q, k, v, xi, z = parts if len(parts) == 5 else (parts[0], None, None, *parts[1:])
        q, k, v = self.attn.heads(q, k, v, pos)
        a, sa = self.attn.attend_heads(q, k, v, pos, None if state is None else state["attn"], ctx)  # (B, L, E)
        s, ss = self._scan(xi, z, None if state is None else state["ssm"])  # (B, L, E)
        y = self.out_proj((self.norm_attn(a) + self.norm_ssm(s)) / 2)  # (B, L, D)
        return y, (None if state is None else {"ssm": ss, "attn": sa})

    def step(self, x_t, state, ctx=None):
        y, new = self.forward(x_t[:, None], state, ctx)
        return y[:, 0], new
