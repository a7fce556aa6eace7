"""Sampling from a `vocab` model with the decoding state: the prompts are prefilled once, then one step per token.

Batched prompts of equal length; greedy (temperature 0) or sampled from softmax(logits / temperature) after top-k
(the k most likely tokens) and top-p (the smallest set of most likely tokens whose probability reaches p; Holtzman
et al. 2019, arXiv:1904.09751), in that order, as transformers' TopKLogitsWarper / TopPLogitsWarper. A row stops at
its first stop token (kept); later positions of a stopped row hold `pad_id`; the batch ends when every row stopped.
The state's global attention caches are sized once for prompt + max_new_tokens (`init_state(max_len=)`), so each
step writes in place; `compile=True` runs the step through `torch.compile` (compiled once per model, then reused).

Glossary: B batch, T prompt length, V vocab.
"""
from __future__ import annotations

import functools

import torch

__all__ = ["generate", "top_k_mask", "top_p_mask", "sample"]


@torch.no_grad()
def generate(model, prompt_ids, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
             generator=None, *, top_p: float | None = None, stop_tokens=(), pad_id: int | None = None,
             compile: bool = False):
    """prompt_ids (B, T) -> (B, T + n), n <= max_new_tokens (fewer when every row stopped). pad_id defaults to the
    model's pad_token, else the first stop token."""
    if model.cfg.output != "logits":
        raise ValueError("generate needs a model with `output logits`")
    if prompt_ids.dim() != 2 or prompt_ids.shape[1] == 0:
        raise ValueError(f"generate: prompt_ids must be (batch, length >= 1) token ids, got {tuple(prompt_ids.shape)}")
    stops = torch.tensor(sorted(set(stop_tokens)), dtype=torch.long, device=prompt_ids.device)
    pad = _pad_id(model, pad_id, stops)
    batch, length = prompt_ids.shape
    state = model.init_state(batch, device=prompt_ids.device,
                             max_len=length + max_new_tokens + model.cfg.meta_tokens)
    logits, state = model(prompt_ids, state=state)  # (B, T, V)
    last, step = logits[:, -1], _step_fn(model, compile)
    out, done = [prompt_ids], torch.zeros(batch, dtype=torch.bool, device=prompt_ids.device)
    for i in range(max_new_tokens):
        tok = sample(last, temperature, top_k, top_p, generator)  # (B,)
        if len(stops):
            tok = torch.where(done, pad, tok)
            done = done | torch.isin(tok, stops)
        out.append(tok[:, None])
        if i + 1 == max_new_tokens or (len(stops) and bool(done.all())):
            break
        last, state = step(tok, state)
    return torch.cat(out, dim=1)


def _pad_id(model, pad_id, stops) -> int:
    if pad_id is not None:
        return pad_id
    pad = getattr(getattr(model, "ir", None), "pad_token", None)
    if pad is not None:
        return pad
    return int(stops[0]) if len(stops) else 0


def _step_fn(model, compile: bool):
    """model.step with in-place state updates (the fused C++ Mamba steps), or the pure model.step's torch.compile'd
    form (dynamic shapes: one graph for every position), kept on the model."""
    if not compile:
        return functools.partial(model.step, inplace=True)
    fn = model.__dict__.get("_compiled_step")
    if fn is None:
        fn = torch.compile(model.step, dynamic=True)
        model.__dict__["_compiled_step"] = fn
    return fn


def top_k_mask(logits, k: int):
    """logits (B, V) with all but the k largest of each row set to -inf (ties with the k-th kept)."""
    if k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, k, dim=-1).values[:, -1:]  # (B, 1)
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_mask(logits, p: float):
    """logits (B, V) keeping, per row, the most likely tokens whose probabilities before each (in descending order)
    sum to less than p: the smallest set reaching p (at least one token); the rest -inf."""
    if p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)  # (B, V)
    probs = sorted_logits.softmax(-1)
    before = probs.cumsum(-1) - probs  # mass of the more likely tokens
    drop = torch.zeros_like(before, dtype=torch.bool).scatter(-1, order, before >= p)  # back to vocab order
    return logits.masked_fill(drop, float("-inf"))


def sample(logits, temperature: float, top_k=None, top_p=None, generator=None):
    """logits (B, V) -> token ids (B,): argmax at temperature 0, else a draw after temperature, top-k, top-p."""
    if temperature == 0:
        return logits.argmax(-1)
    logits = logits.float() / temperature
    if top_k is not None:
        logits = top_k_mask(logits, top_k)
    if top_p is not None:
        logits = top_p_mask(logits, top_p)
    return torch.multinomial(torch.softmax(logits, -1), 1, generator=generator)[:, 0]
