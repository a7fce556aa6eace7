"""Mixture-of-experts FFN (`experts=E`) and the standalone `moe` layer kind (Megatron's `E`), in JAX. Mirrors
hybridc_torch/layers/moe.py name for name (the same weights, routing, ties and aux losses).

Token-choice top-k routing, dropless (Shazeer et al. 2017; Fedus et al. 2021, "Switch Transformers"; Jiang et al.
2024, "Mixtral of Experts"). For the T tokens x (T, D):
    logits = x @ router.weight.T                       (T, E), fp32
    scores = softmax(logits) | sigmoid(logits)          (`router`)
    w, idx = top_k(scores)                              (T, K), ties to the lower expert index (`lax.top_k`'s rule)
    w = w / w.sum(-1) when `renorm`                     (softmax + renorm == Mixtral/Granite's "top-k, then softmax")
    y = sum_k w_k * expert_{idx_k}(x) [+ sigmoid(shared_gate(x)) * shared(x)]
An expert is the FFN of ``ffn.py`` without biases: gated `down(act(gate(x)) * up(x))` with `experts.gate_up_proj`
(E, 2F, D) = [gate rows; up rows] and `experts.down_proj` (E, D, F) (transformers' stacked layout), or plain
`down(act(up(x)))` with `experts.up_proj` (E, F, D). The shared expert is a dense FFN (`shared.gate/up/down`) of width
`shared_hidden` (default shared_experts * F), as transformers' Qwen3NextSparseMoeBlock / GraniteMoeHybrid.

Fast form: the S = T*K token-slots sorted by expert (stable), group sizes = bincount(expert, length=E) (static shapes
under `jit`), each expert's rows multiplied once (`hybridc_jax.ops.grouped_matmul`: `jax.lax.ragged_dot` on GPU/TPU,
a tiled loop on CPU), unsorted, weighted and summed. `reference`: a loop over every expert with masks (the oracle).
Decoding (`step`, B*K <= STEP_SLOTS token-slots): each token's K experts' weights gathered (`jnp.take` of the
stacks -> (B, K, ...)) and applied to it by einsum: router + K experts, nothing proportional to E beyond the router
(torch's `per_token` on views); more slots: the grouped form.

Aux losses (training only): `apply` appends them to `ctx["aux"]` when the caller put a list there (the model's
`apply(..., return_aux=True)`): load balancing E * sum_e f_e * P_e, f_e = (token-slots routed to e) / T,
P_e = mean_t softmax(logits)_e (transformers' `load_balancing_loss_func`); router z-loss (Zoph et al. 2022, "ST-MoE")
mean_t logsumexp(logits_t)^2.

Glossary: T tokens (B*L), D model dim, E experts, K top_k, F expert width, S = T*K token-slots.
"""
from __future__ import annotations

import math
from functools import partial
from types import SimpleNamespace

import jax
import jax.numpy as jnp

from . import ffn
from .common import linear, linear_init, prefixed, sub
from ..ops.grouped_matmul import grouped_ffn

__all__ = ["init", "init_state", "apply", "step", "reference", "route", "aux_losses"]

OP = "grouped_matmul"  # what it runs (`describe --kernels`: hybridc_jax.plan)
STEP_SLOTS = 64  # `step` gathers the chosen experts' weights up to this many token-slots (B * top_k)


def _gated(spec) -> bool:
    return spec.gated or spec.act == "swiglu"


def _in_name(spec) -> str:
    return "experts.gate_up_proj" if _gated(spec) else "experts.up_proj"


def _shared_spec(spec, dim: int):
    """The shared expert's dense FFN spec (no biases), or None."""
    if not getattr(spec, "shared_experts", 0):
        return None
    width = spec.shared_hidden if spec.shared_hidden is not None else spec.shared_experts * ffn.hidden(spec, dim)
    return SimpleNamespace(act=spec.act, gated=spec.gated, bias=False, hidden=width, mult=1.0, gate_scale=1.0,
                           down_scale=1.0)


def _uniform(key, shape, fan_in: int):
    """nn.Linear's default init per expert: U(-1/sqrt(in), 1/sqrt(in))."""
    bound = 1.0 / math.sqrt(fan_in)
    return jax.random.uniform(key, shape, jnp.float32, -bound, bound)


def init(dim: int, spec, *, key) -> dict:
    e, f = spec.experts, ffn.hidden(spec, dim)
    k = jax.random.split(key, 5)
    p = {"router.weight": linear_init(k[0], e, dim),  # (E, D)
         _in_name(spec): _uniform(k[1], (e, 2 * f if _gated(spec) else f, dim), dim),  # (E, 2F | F, D)
         "experts.down_proj": _uniform(k[2], (e, dim, f), f)}  # (E, D, F)
    shared = _shared_spec(spec, dim)
    if shared is not None:
        p |= prefixed("shared", ffn.init(dim, shared, key=k[3]))
        if spec.shared_gate:
            p["shared_gate.weight"] = linear_init(k[4], 1, dim)  # (1, D)
    return p


def init_state(dim: int, spec, batch_size: int, dtype=jnp.float32, **_) -> dict:
    return {}


def route(logits, top_k: int, router: str = "softmax", renorm: bool = True):
    """fp32 logits (T, E) -> (weights (T, K) fp32, expert indices (T, K)); ties go to the lower expert index."""
    scores = jax.nn.softmax(logits, axis=-1) if router == "softmax" else jax.nn.sigmoid(logits)  # (T, E)
    w, idx = jax.lax.top_k(scores, top_k)  # (T, K); equal scores: lower index first
    return (w / w.sum(axis=-1, keepdims=True) if renorm else w), idx


def aux_losses(logits, idx, n_experts: int) -> dict:
    """Load-balancing loss and router z-loss of one layer's fp32 logits (T, E) and chosen experts (T, K)."""
    frac = jnp.bincount(idx.reshape(-1), length=n_experts).astype(logits.dtype) / logits.shape[0]  # f_e (E,)
    prob = jax.nn.softmax(logits, axis=-1).mean(axis=0)  # P_e (E,)
    return {"load_balance": n_experts * jnp.sum(frac * prob),
            "z_loss": jnp.mean(jnp.square(jax.nn.logsumexp(logits, axis=-1)))}


def _hidden(spec, h):
    """The expert activation of the input projection h (..., 2F | F) -> (..., F)."""
    if _gated(spec):
        g, u = jnp.split(h, 2, axis=-1)
        return ffn.ACTS[spec.act](g) * u
    return ffn.ACTS[spec.act](h)


def _router_logits(params, x):
    """x (T, D) -> fp32 logits (T, E)."""
    return x.astype(jnp.float32) @ params["router.weight"].astype(jnp.float32).T


def _grouped(params, spec, x, w, idx):
    """The fast form: x (T, D), weights w (T, K), experts idx (T, K) -> (T, D), each expert's rows once."""
    flat = idx.reshape(-1)  # (S,) slot t*K + k
    order = jnp.argsort(flat, stable=True)  # slots sorted by expert, by token within one
    sizes = jnp.bincount(flat, length=params["experts.down_proj"].shape[0])  # (E,)
    return grouped_ffn(x, order, w.reshape(-1)[order], params[_in_name(spec)], params["experts.down_proj"], sizes,
                       partial(_hidden, spec))


def _gathered(params, spec, x, w, idx):
    """Decoding's form: each token's K experts, their weights gathered: x (B, D), w, idx (B, K) -> (B, D). The einsum
    operand order matters: the weights first ("bkfd,bd") is a batched matrix-vector product, 4x faster here than
    "bd,bkfd"."""
    h = _hidden(spec, jnp.einsum("bkfd,bd->bkf", jnp.take(params[_in_name(spec)], idx, axis=0), x))  # (B, K, F)
    ys = jnp.einsum("bkdf,bkf->bkd", jnp.take(params["experts.down_proj"], idx, axis=0), h)  # (B, K, D)
    return jnp.einsum("bk,bkd->bd", w, ys)


def _expert(params, spec, e: int, x):
    """Expert e on rows x (n, D) -> (n, D)."""
    return _hidden(spec, x @ params[_in_name(spec)][e].T) @ params["experts.down_proj"][e].T


def _masked(params, spec, x, w, idx):
    """The oracle: every expert in turn on every token, kept (weighted) where the token chose it (a mask)."""
    y = jnp.zeros_like(x)
    for e in range(params["experts.down_proj"].shape[0]):
        we = jnp.sum(w * (idx == e), axis=-1)  # (T,) token's weight for expert e (0: not chosen)
        y = y + we[:, None] * _expert(params, spec, e, x)
    return y


def _shared(params, spec, x, y):
    shared = _shared_spec(spec, x.shape[-1])
    if shared is None:
        return y
    s, _ = ffn.apply(sub(params, "shared"), x, shared)
    return y + (s * jax.nn.sigmoid(linear(params, "shared_gate", x)) if spec.shared_gate else s)


def _run(params, x, spec, ctx, routed):
    shape = x.shape
    xt = x.reshape(-1, shape[-1])  # (T, D)
    logits = _router_logits(params, xt)  # (T, E)
    w, idx = route(logits, spec.top_k, spec.router, spec.renorm)  # (T, K)
    if isinstance(ctx, dict) and isinstance(ctx.get("aux"), list):  # a training caller collects them
        ctx["aux"].append(aux_losses(logits, idx, logits.shape[-1]))
    y = _shared(params, spec, xt, routed(params, spec, xt, w.astype(x.dtype), idx))
    return y.reshape(shape)


def apply(params, x, spec, state=None, ctx=None):
    """x (..., D) -> (y (..., D), state): the grouped fast form."""
    return _run(params, x, spec, ctx, _grouped), (None if state is None else {})


def reference(params, x, spec, state=None, ctx=None):
    """As `apply`, with the readable masked loop over every expert (the tests' oracle)."""
    return _run(params, x, spec, ctx, _masked), (None if state is None else {})


def step(params, x_t, spec, state, ctx=None):
    """One position x_t (B, D). Few token-slots (B * K <= STEP_SLOTS): each token's top_k experts' weights gathered,
    so the time does not grow with E beyond the router; more: the grouped forward."""
    few = x_t.shape[0] * spec.top_k <= STEP_SLOTS
    return _run(params, x_t, spec, ctx, _gathered if few else _grouped), {}
