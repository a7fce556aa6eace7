"""Causal multi-head attention: GQA, sliding window or global, QK-norm, optional (partial) RoPE, optional biases,
output gate and logit soft-cap, meta tokens always visible.

Attention itself is `F.scaled_dot_product_attention` with a boolean mask; with `softcap` (Gemma-2, Team et al. 2024,
arXiv:2408.00118: scores -> c*tanh(scores/c)), which SDPA cannot do, an explicit softmax over masked scores. The output
gate is Qwen3-Next's (transformers' Qwen3NextAttention): q_proj gives, per head, E query channels then E gate
channels, and the heads' output is multiplied by sigmoid(gate) before o_proj. Meta tokens (Hymba, Dong et al. 2024,
arXiv:2411.13676) are the first `ctx["meta"]` positions of the stream; every query sees them, also through a window.
Decoding keeps a KV cache in fixed buffers written in place (`kv_slots`): slots [0, M) hold the meta tokens, then a
ring buffer of `window` slots (position p in slot M + (p - M) % window), or for global attention one slot per position
(p in slot p) up to the model state's `max_len` (an error past it), or, without max_len, a buffer that doubles when
full. A one-token step writes its key into its slot and attends to the filled slots (a view: no copy, no mask).
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
        """Empty KV buffers (B, G, 0, E); the first write sizes them (`reserve`). None with kv_reuse."""
        if self.spec.kv_reuse:  # no cache of its own: the first layer of its group holds it
            return {}
        return empty_cache(batch_size, self.g, self.e, getattr(self, "v_dim", self.e), device, dtype)

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
        n_meta, start = ctx.get("meta", 0), ctx.get("pos", 0)
        if state is not None and q.shape[2] == 1 and start >= n_meta:  # one decoding step
            return self._attend_step(q, k, v, start, state, ctx)
        if self.spec.kv_reuse:
            k_all, v_all, k_pos = ctx["kv"]
        elif state is not None:
            state = reserve(state, start + q.shape[2], n_meta, self.spec.window, ctx.get("max_len"))
            k_all, v_all, k_pos = self._with_cache(state, k, v, pos, n_meta)
        else:
            k_all, v_all, k_pos = k, v, pos
        if not self.spec.kv_reuse:
            ctx["kv"] = (k_all, v_all, k_pos)
        y = self._attend(q, k_all, v_all, pos, k_pos, n_meta)  # (B, H, L, Ev)
        y = y.transpose(1, 2).reshape(q.shape[0], q.shape[2], -1)  # (B, L, H*Ev)
        if state is None:
            return y, None
        if not self.spec.kv_reuse and self.spec.window is not None:
            write_ring(state, k, v, pos, n_meta, self.spec.window)
        return y, ({} if self.spec.kv_reuse else state)

    def _with_cache(self, state, k, v, pos, n_meta):
        """Keys/values a chunk at positions pos (L,) attends: global: written in place first, then the filled
        prefix (a view); windowed: the filled slots, then the chunk's own (the ring is written after attending,
        since the chunk may overwrite slots its first queries see). -> (k_all, v_all, k_pos (S,))."""
        start, end = int(pos[0]), int(pos[-1]) + 1
        if self.spec.window is None:
            state["k"][:, :, start:end], state["v"][:, :, start:end] = k, v
            return state["k"][:, :, :end], state["v"][:, :, :end], torch.arange(end, device=k.device)
        filled = min(start, n_meta + self.spec.window)
        slot = torch.arange(filled, device=k.device)
        slot_pos = torch.where(slot < n_meta, slot, start - 1 - torch.remainder(start - 1 - slot, self.spec.window))
        return (torch.cat([state["k"][:, :, :filled], k], dim=2), torch.cat([state["v"][:, :, :filled], v], dim=2),
                torch.cat([slot_pos, pos]))

    def _attend_step(self, q, k, v, pos: int, state, ctx):
        """One query at stream position pos: write its key/value into its slot, attend every filled slot.

        q (B, H, 1, E), k, v (B, G, 1, E) -> (y (B, 1, H*Ev), state). The H = G * rep query heads of a kv head are
        its `rep` queries: no repeated keys; the slots hold exactly the visible keys (meta, window or all)."""
        n_meta, window = ctx.get("meta", 0), self.spec.window
        if self.spec.kv_reuse:
            k_all, v_all, _ = ctx["kv"]
        else:
            state = reserve(state, pos + 1, n_meta, window, ctx.get("max_len"))
            slot = pos if window is None else n_meta + (pos - n_meta) % window
            state["k"][:, :, slot:slot + 1], state["v"][:, :, slot:slot + 1] = k, v
            filled = pos + 1 if window is None else min(pos + 1, n_meta + window)
            k_all, v_all = state["k"][:, :, :filled], state["v"][:, :, :filled]  # (B, G, S, E), views
            ctx["kv"] = (k_all, v_all, None)
        b, g = q.shape[0], k_all.shape[1]
        qg = q.reshape(b, g, -1, q.shape[-1])  # (B, G, rep, E)
        cap, scale = self.spec.softcap, self.spec.scale
        if cap is None:
            y = F.scaled_dot_product_attention(qg, k_all, v_all, scale=scale)  # (B, G, rep, Ev)
        else:
            s = (qg @ k_all.transpose(-1, -2)) * (self.e ** -0.5 if scale is None else scale)  # (B, G, rep, S)
            y = (cap * torch.tanh(s / cap)).softmax(dim=-1) @ v_all
        return y.reshape(b, 1, -1), ({} if self.spec.kv_reuse else state)  # (B, 1, H*Ev)

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

    def step(self, x_t, state, ctx=None):
        y, new = self.forward(x_t[:, None], state, ctx)
        return y[:, 0], new


def empty_cache(batch: int, g: int, e: int, ev: int, device=None, dtype=torch.float32) -> dict:
    """KV buffers of no slots: k (B, G, 0, E), v (B, G, 0, Ev)."""
    return {"k": torch.zeros(batch, g, 0, e, device=device, dtype=dtype),
            "v": torch.zeros(batch, g, 0, ev, device=device, dtype=dtype)}


def kv_slots(end: int, n_meta: int, window, max_len) -> int:
    """Slots a cache needs once stream positions [0, end) are written: M + window (ring), or `max_len` (global, given
    one), or `end` (global, growing)."""
    if window is not None:
        return min(end, n_meta + window) if max_len is None else n_meta + window
    if max_len is None:
        return end
    if end > max_len:
        raise ValueError(f"attn: decoding position {end - 1} is past max_len={max_len}: the global attention cache "
                         f"holds max_len positions (meta tokens included); pass a larger init_state(..., max_len=) "
                         f"or none (the cache then doubles when full)")
    return max_len


def reserve(state: dict, end: int, n_meta: int, window, max_len) -> dict:
    """The state with buffers of at least `kv_slots` slots: unchanged when they fit, else new buffers (the needed
    size with max_len; else double the old, a window's capped at M + window) holding the old slots in place. In
    place: the state dict is updated and returned."""
    need, have = kv_slots(end, n_meta, window, max_len), state["k"].shape[2]
    if need <= have:
        return state
    size = need if max_len is not None else max(need, 2 * have)
    size = size if window is None else min(size, n_meta + window)
    for name in ("k", "v"):
        old = state[name]
        new = old.new_zeros(old.shape[0], old.shape[1], size, old.shape[3])
        new[:, :, :have] = old
        state[name] = new
    return state


def write_ring(state: dict, k, v, pos, n_meta: int, window: int):
    """Write a chunk's keys/values at positions pos (L,) into a windowed cache: meta tokens to their slots, the last
    `window` others to theirs (M + (p - M) % window, distinct)."""
    nm = int((pos < n_meta).sum())
    if nm:
        state["k"][:, :, :nm], state["v"][:, :, :nm] = k[:, :, :nm], v[:, :, :nm]
    keep = min(k.shape[2] - nm, window)
    if keep > 0:
        slots = n_meta + torch.remainder(pos[-keep:] - n_meta, window)  # (keep,)
        state["k"].index_copy_(2, slots, k[:, :, -keep:])
        state["v"].index_copy_(2, slots, v[:, :, -keep:])


LAYER = Attention
KERNEL = ("sdpa", "torch.nn.functional.scaled_dot_product_attention")  # (`describe --kernels`: hybridc_torch.plan)
