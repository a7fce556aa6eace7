"""Causal multi-head attention: GQA, sliding window or global, QK-norm, optional (partial) RoPE, optional biases,
output gate and logit soft-cap, meta tokens always visible.

Attention itself is `F.scaled_dot_product_attention` with a boolean mask; with `softcap` (Gemma-2, Team et al. 2024,
arXiv:2408.00118: scores -> c*tanh(scores/c)), which SDPA cannot do, an explicit softmax over masked scores. The output
gate is Qwen3-Next's (transformers' Qwen3NextAttention): q_proj gives, per head, E query channels then E gate
channels, and the heads' output is multiplied by sigmoid(gate) before o_proj. Meta tokens (Hymba, Dong et al. 2024,
arXiv:2411.13676) are the first `ctx["meta"]` positions of the stream; every query sees them, also through a window.
Decoding keeps a KV cache: the meta tokens' keys/values and the last `window` keys/values (all of them when global).
RoPE is the rotate-half form (Su et al. 2021, as in transformers' Llama), on the first `rope_dim` channels of each head
with frequencies from that width (transformers' `partial_rotary_factor`, e.g. Qwen3-Next's apply_rotary_pos_emb).

Scalar multipliers (no parameters): `scale` replaces the score scale 1/sqrt(E) (Granite's attention_multiplier,
transformers' GraniteMoeHybridAttention); Falcon-H1's muP (FalconH1DecoderLayer / FalconH1Attention): the input times
`in_scale`, k_proj's output times `key_scale` (before QK-norm and RoPE), o_proj's output times `out_scale`.
QK-norm (`qk_norm`): `head` RMS-normalises each head's query and key (weights (E,), Qwen3 / Qwen3-Next), `proj` the
whole q and k projections before the split into heads (weights (H*E,), (G*E,): OLMo-2, transformers' Olmo2Attention);
eps 1e-6, or the model's `norm eps=`, and (1 + w) weights with the model's `norm zero_centered=true` (Qwen3NextRMSNorm).

Glossary: B batch, L new steps, S cached + new keys, H query heads, G kv heads, E head_dim, D model dim, M meta tokens.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._norm import make_norm


def rope(x, pos, base: float):
    """Rotate-half RoPE. x (B, H, L, E); pos (L,) absolute positions."""
    half = x.shape[-1] // 2
    inv = base ** (-torch.arange(half, device=x.device, dtype=torch.float32) / half)  # (E/2,)
    ang = pos.to(torch.float32)[:, None] * inv[None, :]  # (L, E/2)
    cos, sin = ang.cos().to(x.dtype), ang.sin().to(x.dtype)
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


def partial_rope(x, pos, base: float, rot: int):
    """RoPE on the first `rot` channels of x (B, H, L, E), the rest passed through."""
    if rot == x.shape[-1]:
        return rope(x, pos, base)
    return torch.cat([rope(x[..., :rot], pos, base), x[..., rot:]], dim=-1)


QK_EPS = 1e-6  # the QK-norms' eps when the model's `norm` statement writes none


def qk_form(spec) -> str:
    """spec.qk_norm: "head" | "proj" | "none" (a hand-built spec's bool: True = head, False = none)."""
    form = spec.qk_norm
    return ("head" if form else "none") if isinstance(form, bool) else form


def attention_mask(q_pos, k_pos, n_meta: int, window):
    """(L, S) boolean: key j visible to query i if causal and (inside the window or a meta token)."""
    causal = k_pos[None, :] <= q_pos[:, None]
    if window is None:
        return causal
    near = q_pos[:, None] - k_pos[None, :] < window
    return causal & (near | (k_pos[None, :] < n_meta))


class Attention(nn.Module):
    """spec: heads, head_dim, kv_heads, window (int or None), qk_norm, rope, rope_base, rope_fraction, qkv_bias,
    o_bias, gate, softcap (float or None), scale (float or None: 1/sqrt(head_dim)), in_scale, key_scale, out_scale."""

    def __init__(self, dim: int, spec, *, impl: str = "auto"):
        super().__init__()
        self.spec, self.h, self.g, self.e = spec, spec.heads, spec.kv_heads, spec.head_dim
        self.rot = int(spec.head_dim * spec.rope_fraction)
        q_out = self.h * self.e * (2 if spec.gate else 1)
        self.q_proj = nn.Linear(dim, q_out, bias=spec.qkv_bias)
        if not spec.kv_reuse:  # kv_reuse: the previous attention layer's keys and values (Hymba)
            self.k_proj = nn.Linear(dim, self.g * self.e, bias=spec.qkv_bias)
            self.v_proj = nn.Linear(dim, self.g * self.e, bias=spec.qkv_bias)
        self.o_proj = nn.Linear(self.h * self.e, dim, bias=spec.o_bias)
        self.qk = qk_form(spec)
        if self.qk != "none":  # per head (E,), or over the whole projection (H*E,) / (G*E,) (OLMo-2)
            eps, zc = getattr(spec, "norm_eps", None), getattr(spec, "norm_zero_centered", False)  # model's `norm`
            width = (lambda heads: self.e) if self.qk == "head" else (lambda heads: heads * self.e)
            self.q_norm = make_norm("rms", width(self.h), QK_EPS if eps is None else eps, zc)
            if not spec.kv_reuse:
                self.k_norm = make_norm("rms", width(self.g), QK_EPS if eps is None else eps, zc)

    def init_state(self, batch_size: int, device=None, dtype=torch.float32) -> dict:
        if self.spec.kv_reuse:  # no cache of its own: the first layer of its group holds it
            return {}
        empty = torch.zeros(batch_size, self.g, 0, self.e, device=device, dtype=dtype)
        return {"meta_k": empty, "meta_v": empty.clone(), "k": empty.clone(), "v": empty.clone()}

    def _qkv(self, x, pos):
        """-> q (B, H, L, E), k, v (B, G, L, E), gate (B, L, H*E) or None."""
        b, l, _ = x.shape
        x = x * self.spec.in_scale if self.spec.in_scale != 1.0 else x
        q, gate = self.q_proj(x), None
        if self.spec.gate:
            q, gate = q.view(b, l, self.h, 2 * self.e).chunk(2, dim=-1)  # (B, L, H, E) each
            gate = gate.reshape(b, l, self.h * self.e)
        if self.qk == "proj":
            q = self.q_norm(q.reshape(b, l, self.h * self.e))  # (B, L, H*E), before the split into heads
        q = q.reshape(b, l, self.h, self.e).transpose(1, 2)  # (B, H, L, E)
        if self.spec.kv_reuse:  # queries only: keys/values are the previous attention layer's
            return self.position_q(q, pos), None, None, gate
        k = self.k_proj(x).view(b, l, self.g, self.e).transpose(1, 2)  # (B, G, L, E)
        k = k * self.spec.key_scale if self.spec.key_scale != 1.0 else k
        v = self.v_proj(x).view(b, l, self.g, self.e).transpose(1, 2)  # (B, G, L, E)
        if self.qk == "head":
            q, k = self.q_norm(q), self.k_norm(k)
        elif self.qk == "proj":  # k (B, G, L, E) -> (B, L, G*E) -> normed, back
            k = self.k_norm(k.transpose(1, 2).reshape(b, l, self.g * self.e)).view(b, l, self.g, self.e).transpose(1, 2)
        if self.spec.rope:
            base = self.spec.rope_base
            q, k = partial_rope(q, pos, base, self.rot), partial_rope(k, pos, base, self.rot)
        return q, k, v, gate

    def position_q(self, q, pos):
        """QK-norm and RoPE of queries alone, q (B, H, L, E) (a kv_reuse layer, Hymba's fused heads)."""
        q = self.q_norm(q) if self.qk == "head" else q  # (proj: normed in _qkv, before the split into heads)
        return partial_rope(q, pos, self.spec.rope_base, self.rot) if self.spec.rope else q

    def forward(self, x, state=None, ctx=None):
        """x (B, L, D) normed -> (y (B, L, D), new_state or None)."""
        ctx = {} if ctx is None else ctx
        start = ctx.get("pos", 0)
        b, l, _ = x.shape
        pos = torch.arange(start, start + l, device=x.device)  # (L,)
        q, k, v, gate = self._qkv(x, pos)
        y, new = self.attend_heads(q, k, v, pos, state, ctx)  # (B, L, H*E)
        y = self.o_proj(y if gate is None else y * torch.sigmoid(gate))
        y = y * self.spec.out_scale if self.spec.out_scale != 1.0 else y
        return y, new

    def attend_heads(self, q, k, v, pos, state, ctx):
        """q (B, H, L, E), k (B, G, L, E), v (B, G, L, Ev) at positions pos (L,) -> (y (B, L, H*Ev), new_state).

        The keys/values attended (cache + new, with their positions) are left in ctx["kv"] for the next attention
        layers; with kv_reuse (Hymba's cross-layer KV sharing) k, v are None, the ones left there are read and no
        cache is kept."""
        n_meta = ctx.get("meta", 0)
        if self.spec.kv_reuse:
            k_all, v_all, k_pos = ctx["kv"]
        elif state is not None:
            r, m, start = state["k"].shape[2], state["meta_k"].shape[2], int(pos[0])
            past = torch.arange(start - r, start, device=q.device)
            k_all = torch.cat([state["meta_k"], state["k"], k], dim=2)  # (B, G, S, E)
            v_all = torch.cat([state["meta_v"], state["v"], v], dim=2)  # (B, G, S, Ev)
            k_pos = torch.cat([torch.arange(m, device=q.device), past, pos])
        else:
            k_all, v_all, k_pos = k, v, pos
        if not self.spec.kv_reuse:
            ctx["kv"] = (k_all, v_all, k_pos)
        y = self._attend(q, k_all, v_all, pos, k_pos, n_meta)  # (B, H, L, Ev)
        y = y.transpose(1, 2).reshape(q.shape[0], q.shape[2], -1)  # (B, L, H*Ev)
        if state is None:
            return y, None
        return y, ({} if self.spec.kv_reuse else self._update(state, k, v, pos, n_meta))

    def _attend(self, q, k, v, q_pos, k_pos, n_meta):
        rep = self.h // self.g
        if rep > 1:
            k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)  # (B, H, S, E)
        window, cap, scale = self.spec.window, self.spec.softcap, self.spec.scale  # scale None: 1/sqrt(E)
        if cap is None and (window is None or window >= int(k_pos[-1]) + 1) and torch.equal(q_pos, k_pos):
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale)
        mask = attention_mask(q_pos, k_pos, n_meta, window)  # (L, S)
        if cap is None:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
        s = (q @ k.transpose(-1, -2)) * (self.e ** -0.5 if scale is None else scale)  # (B, H, L, S)
        s = (cap * torch.tanh(s / cap)).masked_fill(~mask, float("-inf"))
        return s.softmax(dim=-1) @ v

    def _update(self, state, k, v, pos, n_meta):
        """Append the new keys/values: meta tokens to the meta cache, the rest to the (window-capped) cache."""
        is_meta = pos < n_meta
        nm = int(is_meta.sum())
        meta_k = torch.cat([state["meta_k"], k[:, :, :nm]], dim=2)
        meta_v = torch.cat([state["meta_v"], v[:, :, :nm]], dim=2)
        new_k = torch.cat([state["k"], k[:, :, nm:]], dim=2)
        new_v = torch.cat([state["v"], v[:, :, nm:]], dim=2)
        w = self.spec.window
        if w is not None and new_k.shape[2] > w:
            new_k, new_v = new_k[:, :, -w:], new_v[:, :, -w:]
        return {"meta_k": meta_k, "meta_v": meta_v, "k": new_k, "v": new_v}

    def step(self, x_t, state, ctx=None):
        y, new = self.forward(x_t[:, None], state, ctx)
        return y[:, 0], new


LAYER = Attention
KERNEL = ("sdpa", "torch.nn.functional.scaled_dot_product_attention")  # (`describe --kernels`: hybridc_torch.plan)
