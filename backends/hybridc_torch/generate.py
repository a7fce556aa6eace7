"""Sampling from a `vocab` model with the decoding state: the prompt is prefilled once, then one step per token."""
from __future__ import annotations

import torch


@torch.no_grad()
def generate(model, prompt_ids, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None, generator=None):
    """prompt_ids (B, T) -> (B, T + max_new_tokens). temperature 0 is greedy; top_k keeps the k most likely tokens."""
    if model.cfg.output != "logits":
        raise ValueError("generate needs a model with `output logits`")
    state = model.init_state(prompt_ids.shape[0], device=prompt_ids.device)
    logits, state = model(prompt_ids, state=state)  # (B, T, V)
    last = logits[:, -1]
    out = [prompt_ids]
    for i in range(max_new_tokens):
        tok = _sample(last, temperature, top_k, generator)  # (B,)
        out.append(tok[:, None])
        if i + 1 < max_new_tokens:
            last, state = model.step(tok, state)
    return torch.cat(out, dim=1)


def _sample(logits, temperature: float, top_k, generator):
    if temperature == 0:
        return logits.argmax(-1)
    logits = logits / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.multinomial(torch.softmax(logits, -1), 1, generator=generator)[:, 0]
