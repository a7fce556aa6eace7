"""Mixture-of-experts FFN (`experts=E`), and the standalone `moe` layer kind (Megatron's `E`) built on it.

Token-choice top-k routing, dropless (Shazeer et al. 2017; Fedus et al. 2021, "Switch Transformers"; Jiang et al.
2024, "Mixtral of Experts"). For the T tokens x (T, D):
    logits = x @ router.weight.T                       (T, E), fp32
    scores = softmax(logits) | sigmoid(logits)          (`router`)
    w, idx = top_k(scores)                              (T, K), ties to the lower expert index (a stable sort)
    w = w / w.sum(-1) when `renorm`                     (softmax + renorm == Mixtral/Granite's "top-k, then softmax")
    y = sum_k w_k * expert_{idx_k}(x) [+ sigmoid(shared_gate(x)) * shared(x)]
An expert is the FFN of ``ffn.py`` without biases: gated `down(act(gate(x)) * up(x))` with `experts.gate_up_proj`
(E, 2F, D) = [gate rows; up rows] and `experts.down_proj` (E, D, F) (transformers' stacked layout), or plain
`down(act(up(x)))` with `experts.up_proj` (E, F, D). The shared expert is a dense `FFN` (`shared.gate/up/down`) of
width `shared_hidden` (default shared_experts * F), as transformers' Qwen3NextSparseMoeBlock / GraniteMoeHybrid.

Fast forms, the T*K token-slots sorted by expert (stable), each expert's rows multiplied once. With autograd
(`impl="auto"`): one gather of the sorted rows, `torch.nn.functional.grouped_mm` over them where it runs (torch >=
2.10 on CPU: 16-byte row strides), else a loop over the non-empty experts on contiguous slices (`impl="loop"`), one
gather back and a (1, K) x (K, D) product per token. Without autograd (inference), expert by expert: its rows
gathered, multiplied while they are in cache, weighted and index-added (`Experts.streamed`). `impl="reference"`: a
readable loop over every expert with masks (the oracle of the tests). Groups are padded to a multiple of ROWS rows
(`layout`) so that a token's output is bit-independent of the other tokens. Decoding is per token: `step` runs each
token's top_k experts on views of their weights (no time proportional to E beyond the router; more than STEP_SLOTS
slots: grouped).

Aux losses (training only: computed when `self.training` or `self.aux`, kept in `self.last_aux`, summed over layers by
`HybridModel.aux_losses()`): load balancing (Switch eq. 4-6, transformers' `load_balancing_loss_func`)
E * sum_e f_e * P_e, f_e = (token-slots routed to e) / T, P_e = mean_t softmax(logits)_e; router z-loss (Zoph et al.
2022, "ST-MoE") mean_t logsumexp(logits_t)^2.

Glossary: T tokens (B*L), D model dim, E experts, K top_k, F expert width, S = T*K token-slots.
"""
from __future__ import annotations

from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn

from .ffn import ACTS, FFN, hidden

__all__ = ["MoE", "LAYER", "KERNEL", "route", "aux_losses"]

IMPLS = ("auto", "grouped_mm", "loop", "reference")
ROWS = 4  # rows per group are padded to a multiple of this (`layout`)
STEP_SLOTS = 64  # `step` runs per token up to this many token-slots (B * top_k)


def route(logits, top_k: int, router: str = "softmax", renorm: bool = True):
    """fp32 logits (T, E) -> (weights (T, K) fp32, expert indices (T, K)); ties go to the lower expert index."""
    scores = torch.softmax(logits, dim=-1) if router == "softmax" else torch.sigmoid(logits)  # (T, E)
    top, idx = torch.sort(scores, dim=-1, descending=True, stable=True)  # stable: equal scores keep index order
    w, idx = top[:, :top_k], idx[:, :top_k]  # (T, K)
    if renorm:
        w = w / w.sum(dim=-1, keepdim=True)
    return w, idx


def aux_losses(logits, idx, n_experts: int) -> dict:
    """Load-balancing loss and router z-loss of one layer's fp32 logits (T, E) and chosen experts (T, K)."""
    counts = torch.bincount(idx.reshape(-1), minlength=n_experts).to(logits.dtype)  # (E,)
    frac = counts / logits.shape[0]  # f_e: slots per token routed to e (sums to K)
    prob = torch.softmax(logits, dim=-1).mean(dim=0)  # P_e (E,)
    return {"load_balance": n_experts * (frac * prob).sum(),
            "z_loss": torch.logsumexp(logits, dim=-1).square().mean()}


def _grouped_mm_runs(x, w) -> bool:
    """Whether `F.grouped_mm` takes x (S, In) @ w (E, In, Out) here (CPU: torch >= 2.10, 16-byte strides; other
    devices take the loop)."""
    if not hasattr(F, "grouped_mm") or x.device.type != "cpu" or x.dtype not in (torch.float32, torch.bfloat16) \
            or w.dtype != x.dtype:
        return False
    size = x.element_size()
    return all(n * size % 16 == 0 for n in (x.shape[1], w.shape[1], w.shape[2])) and \
        x.data_ptr() % 16 == 0 and w.data_ptr() % 16 == 0


def _contiguous_grad(y):
    """grouped_mm's CPU backward rejects stride-0 (expanded) gradients: make the incoming gradient contiguous."""
    if y.requires_grad:
        y.register_hook(lambda g: g.contiguous())
    return y


def grouped_linear(xs, weight, counts: list, impl: str):
    """Rows xs (S, In) sorted by expert, counts[e] rows each; weight (E, Out, In) -> (S, Out), row s times its
    expert's weight: one product per non-empty expert."""
    wt = weight.transpose(-2, -1)  # (E, In, Out)
    if impl in ("auto", "grouped_mm") and _grouped_mm_runs(xs, wt):
        offs = torch.tensor(counts, dtype=torch.int64).cumsum(0).to(torch.int32)  # (E,) group ends
        return _contiguous_grad(F.grouped_mm(xs, wt, offs=offs))
    if impl == "grouped_mm":
        raise ValueError("impl='grouped_mm' needs torch.nn.functional.grouped_mm with 16-byte row strides here; "
                         f"valid impl: {', '.join(IMPLS)}")
    # split/unbind, not slices: their backward writes each group's gradient once (a slice's fills a full-size zero)
    parts = [x_e @ w_e for x_e, w_e, n in zip(xs.split(counts), wt.unbind(0), counts) if n]  # (n, Out) each
    return torch.cat(parts) if parts else xs.new_zeros(0, weight.shape[1])


def layout(idx, n_experts: int):
    """The token-slots of idx (T, K) grouped by expert, each group padded with rows to a multiple of ROWS: the CPU
    GEMM's short-M kernels round differently, so unpadded a token's output would depend (in the last bits) on how
    many other tokens chose its experts; padded it does not (causality and batch invariance hold bit for bit).
    -> (src (S',): the token of each grouped row (pad rows: token 0, their results unused), at (S,): the grouped row
    of slot t*K + k, counts: rows per expert (a list, multiples of ROWS))."""
    flat = idx.reshape(-1)  # (S,) slot t*K + k -> its expert
    order = torch.argsort(flat, stable=True)  # (S,) slots by expert, by token within one
    n = torch.bincount(flat, minlength=n_experts)  # (E,)
    padded = (n + ROWS - 1) // ROWS * ROWS  # (E,)
    shift = (padded - n).cumsum(0) - (padded - n)  # (E,) pad rows before group e
    row = torch.arange(flat.shape[0], device=flat.device) + shift[flat[order]]  # (S,) row of the j-th sorted slot
    at = torch.empty_like(row).index_copy_(0, order, row)  # (S,)
    src = flat.new_zeros(int(padded.sum())).index_copy_(0, row, order // idx.shape[1])  # (S',)
    return src, at, padded.tolist()


class Experts(nn.Module):
    """E stacked experts without biases: gated `gate_up_proj` (E, 2F, D) + `down_proj` (E, D, F), or plain
    `up_proj` (E, F, D) + `down_proj`."""

    def __init__(self, n: int, dim: int, width: int, act: str, gated: bool):
        super().__init__()
        self.n, self.act, self.gated = n, act, gated
        if gated:
            self.gate_up_proj = nn.Parameter(torch.empty(n, 2 * width, dim))
        else:
            self.up_proj = nn.Parameter(torch.empty(n, width, dim))
        self.down_proj = nn.Parameter(torch.empty(n, dim, width))
        for w in (self.in_proj, self.down_proj):  # nn.Linear's default init, per expert
            bound = w.shape[-1] ** -0.5
            nn.init.uniform_(w, -bound, bound)

    @property
    def in_proj(self):
        return self.gate_up_proj if self.gated else self.up_proj

    def hidden(self, h):
        """The expert activation of the input projection h (..., 2F | F) -> (..., F)."""
        if self.gated:
            g, u = h.chunk(2, dim=-1)
            return ACTS[self.act](g) * u
        return ACTS[self.act](h)

    def one(self, e: int, x):
        """Expert e on rows x (n, D) -> (n, D)."""
        return self.hidden(x @ self.in_proj[e].T) @ self.down_proj[e].T

    def grouped(self, xs, counts: list, impl: str):
        """Rows xs (S', D) sorted by expert (counts[e] each) -> (S', D)."""
        h = self.hidden(grouped_linear(xs, self.in_proj, counts, impl))  # (S', F)
        return grouped_linear(h, self.down_proj, counts, impl)  # (S', D)

    def streamed(self, x, w, idx):
        """No autograd: x (T, D), w, idx (T, K) -> (T, D), one expert after the other on its tokens (a stable sort by
        expert), their rows padded to a multiple of ROWS as in `layout`, the weighted outputs added in expert order."""
        flat = idx.reshape(-1)
        order = torch.argsort(flat, stable=True)  # (S,)
        tok, ws = order // idx.shape[1], w.reshape(-1)[order, None]  # (S,), (S, 1)
        y = torch.zeros_like(x)
        start = 0
        for e, n in enumerate(torch.bincount(flat, minlength=self.n).tolist()):
            if n:
                rows = tok[start:start + n]
                pad = -n % ROWS
                xe = x.index_select(0, torch.cat([rows, rows[:1].expand(pad)]) if pad else rows)  # (n + pad, D)
                ye = self.hidden(xe @ self.in_proj[e].T) @ self.down_proj[e].T  # (n + pad, D)
                y.index_add_(0, rows, ye[:n] * ws[start:start + n])
                start += n
        return y

    def per_token(self, x, w, idx):
        """Each token's own experts on views of their weights (nothing copied, nothing else touched):
        x (T, D), w, idx (T, K) -> (T, D)."""
        out = []
        for x_t, w_t, chosen in zip(x, w, idx.tolist()):
            ys = torch.stack([self.down_proj[e] @ self.hidden(self.in_proj[e] @ x_t) for e in chosen])  # (K, D)
            out.append(w_t @ ys)
        return torch.stack(out)


class MoE(nn.Module):
    """The mixture-of-experts FFN (spec: experts, top_k, hidden/mult, act, gated, shared_experts, shared_hidden,
    shared_gate, router, renorm). Also the `moe` kind's layer: `(x, state, ctx) -> (y, state)`, no decode state."""

    def __init__(self, dim: int, spec, *, impl: str = "auto"):
        super().__init__()
        if impl not in IMPLS:
            impl = "auto"  # a model-wide kernel choice (e.g. impl="cpp" for the recurrences) leaves the MoE's own
        self.impl, self.top_k = impl, spec.top_k
        self.router_kind, self.renorm = spec.router, spec.renorm
        self.aux, self.last_aux = False, None
        width, gated = hidden(spec, dim), spec.gated or spec.act == "swiglu"
        self.router = nn.Linear(dim, spec.experts, bias=False)
        self.experts = Experts(spec.experts, dim, width, spec.act, gated)
        self.shared = self.shared_gate = None
        if spec.shared_experts:
            sh = spec.shared_hidden if spec.shared_hidden is not None else spec.shared_experts * width
            self.shared = FFN(dim, SimpleNamespace(act=spec.act, gated=spec.gated, bias=False, hidden=sh, mult=1.0,
                                                   gate_scale=1.0, down_scale=1.0))
            if spec.shared_gate:
                self.shared_gate = nn.Linear(dim, 1, bias=False)

    def init_state(self, batch_size: int, device=None, dtype=torch.float32) -> dict:
        return {}

    def router_logits(self, x):
        """x (T, D) -> fp32 logits (T, E)."""
        return F.linear(x.float(), self.router.weight.float())

    def _shared(self, x, y):
        if self.shared is None:
            return y
        s, _ = self.shared(x)
        return y + (s * torch.sigmoid(self.shared_gate(x)) if self.shared_gate is not None else s)

    def routed(self, x, logits, impl: str | None = None):
        """The routed experts' output for tokens x (T, D) and their logits (T, E) -> (T, D)."""
        impl = impl or self.impl
        w, idx = route(logits, self.top_k, self.router_kind, self.renorm)  # (T, K)
        if self.training or self.aux:
            self.last_aux = aux_losses(logits, idx, self.experts.n)
        w = w.to(x.dtype)
        if impl == "reference":
            return self._reference(x, w, idx)
        if not torch.is_grad_enabled() or not any(t.requires_grad for t in (x, *self.parameters())):
            return self.experts.streamed(x, w, idx)  # inference: expert by expert, its rows still in cache
        src, at, counts = layout(idx, self.experts.n)
        ys = self.experts.grouped(x.index_select(0, src), counts, impl)  # (S', D) by expert
        return torch.bmm(w[:, None], ys.index_select(0, at).view(*idx.shape, -1))[:, 0]  # (T, D): sum_k w_k y_k

    def _reference(self, x, w, idx):
        """The oracle: every expert in turn, on the tokens that chose it (a mask), weighted and added."""
        y = torch.zeros_like(x)
        for e in range(self.experts.n):
            chose = idx == e  # (T, K)
            rows = chose.any(dim=-1)  # (T,)
            if rows.any():
                we = (w * chose).sum(dim=-1)[rows, None]  # (n, 1)
                y = y.index_add(0, rows.nonzero()[:, 0], we * self.experts.one(e, x[rows]))
        return y

    def forward(self, x, state=None, ctx=None):
        shape = x.shape
        xt = x.reshape(-1, shape[-1])  # (T, D)
        if not (self.training or self.aux):
            self.last_aux = None
        y = self._shared(xt, self.routed(xt, self.router_logits(xt)))
        return y.view(shape), (None if state is None else {})

    def step(self, x_t, state, ctx=None):
        """One position x_t (B, D). Few token-slots (B * K <= STEP_SLOTS): each token's top_k experts on views of
        their weights, so the time does not grow with E beyond the router; more: the grouped forward."""
        logits = self.router_logits(x_t)  # (B, E)
        if x_t.shape[0] * self.top_k > STEP_SLOTS or self.impl == "reference":
            return self._shared(x_t, self.routed(x_t, logits)), {}
        w, idx = route(logits, self.top_k, self.router_kind, self.renorm)  # (B, K)
        return self._shared(x_t, self.experts.per_token(x_t, w.to(x_t.dtype), idx)), {}


LAYER = MoE
KERNEL = ("grouped", "no recurrence; token rows sorted by expert, each expert's rows multiplied once (CPU: grouped_mm)")
