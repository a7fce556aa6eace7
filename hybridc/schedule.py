"""Where attention goes: the placement rules behind `ratio`, `every` and `pattern`.

All functions return 0-based attention positions (or kinds) and never see the rest of the model.
"""
from __future__ import annotations

import math


def round_half_away(x: float) -> int:
    """Round half away from zero (Elixir's `round/1`); Python's `round` is banker's rounding."""
    return int(math.floor(abs(x) + 0.5)) * (1 if x >= 0 else -1)


def spread_positions(n: int, backbone: int, attn: int) -> list[int]:
    """The seeds' ratio rule: attention evenly spread, the last one at the end.

    n_attn = max(round_half_away(n*attn/(backbone+attn)), 1) capped at n;
    position i = round_half_away((i+1)*n/n_attn) - 1, clamped to n-1. 10 layers 9:1 -> [9].
    """
    n_attn = min(max(round_half_away(n * attn / (backbone + attn)), 1), n)
    return sorted({min(max(round_half_away((i + 1) * n / n_attn) - 1, 0), n - 1) for i in range(n_attn)})


def megatron_positions(n: int, backbone: int, attn: int) -> list[int]:
    """Megatron-LM's even allocation (its deprecated `hybrid_attention_ratio`).

    n_attn = round(n*ratio) (banker's rounding, as Python's `round`); run length r = (n-n_attn)/(n_attn+1);
    walk the layers with a counter starting at r: place attention when it is below 0.5 (and add r), else subtract 1.
    10 layers at 0.1 -> [5]; 32 at 0.1 -> [7, 16, 24]; 32 at 0.125 -> [6, 12, 19, 25].
    """
    n_attn = round(n * attn / (backbone + attn))
    if n_attn <= 0:
        return []
    run = (n - n_attn) / (n_attn + 1)
    counter, out = run, []
    for i in range(n):
        if counter < 0.5 and len(out) < n_attn:
            out.append(i)
            counter += run
        else:
            counter -= 1
    return out


def every_positions(n: int, every: int, offset: int) -> list[int]:
    """Attention at the 0-based indices i with i % every == offset (the seeds' `attention_every` when offset = every-1)."""
    return [i for i in range(n) if i % every == offset]


MEGATRON_UNSUPPORTED = {
    "D": "DeepSeek sparse attention", "+": "multi-head latent attention",
    "|": "pipeline-stage separators", "/": "multi-token-prediction patterns",
}
