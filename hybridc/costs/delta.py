"""Cost formulas for the delta-rule family: delta_net, gated_delta_net, rwkv (RWKV-7 time mix), rwkv_cmix.

Pure Python (no torch). Mirrors the torch backend's parameterization (backends/hybridc_torch/layers/delta_net.py,
gated_delta_net.py, rwkv.py), which follows flash-linear-attention's DeltaNet / GatedDeltaNet / RWKV7Attention /
RWKV7FeedForward (papers: arXiv:2406.06484, arXiv:2412.06464, arXiv:2503.14456). See docs/layers/delta.md.

    params(spec, dim)      exact parameter count of the torch module
    state_numel(spec, dim) elements of the decode state per sequence (init_state(1))
    flops(spec, dim)       forward FLOPs per token, 2 per multiply-add: matmuls + short convs + recurrence
                           (elementwise activations / norms / lerps are not counted)
    resolve(options, dim)  fill defaults and "auto" options, validate; returns a new dict. Error messages do not
                           name the kind (the core prefixes it).

Dimension glossary:
    D model dim, H heads, K key head dim, V value head dim, W short-conv width, R LoRA rank,
    F channel-mix hidden size.
"""
from __future__ import annotations

import math

__all__ = ["FORMULAS", "DEFAULTS", "params", "state_numel", "flops", "resolve", "rwkv_default_ranks"]

AUTO = "auto"

DEFAULTS = {
    "delta_net": {"heads": 4, "head_dim": AUTO, "conv": 4, "gate": False},
    "gated_delta_net": {"heads": 4, "head_dim": 64, "expand_v": 2, "conv": 4, "gate": True},
    "rwkv": {"head_dim": 64, "decay_rank": AUTO, "a_rank": AUTO, "v_rank": AUTO, "gate_rank": AUTO},
    "rwkv_cmix": {"mult": 4},
}


# ----------------------------------------------------------------------------------------------- helpers
def _int(value, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"option {name} must be an integer >= {minimum}, got {value!r}")
    return value


def _value_head_dim(head_dim: int, expand_v) -> int:
    head_v = int(head_dim * expand_v)
    if head_v <= 0 or not math.isclose(head_dim * expand_v, head_v, rel_tol=1e-5):
        raise ValueError(f"head_dim * expand_v must be a positive integer, got {head_dim} * {expand_v!r}")
    return head_v


def _conv_channels(kd: int, vd: int) -> int:
    return 2 * kd + vd


def rwkv_default_ranks(dim: int, head_dim: int) -> dict[str, int]:
    """fla's RWKV7Attention default LoRA ranks (larger for head_dim > 64 via factor = head_dim / 64)."""
    factor = head_dim / 64
    sq = dim ** 0.5

    def r32(x):
        return max(32, int(round(x / 32) * 32))
    return {"decay_rank": r32(2.5 * sq * factor), "a_rank": r32(2.5 * sq * factor),
            "v_rank": r32(1.7 * sq * factor), "gate_rank": r32(5 * sq)}


def cmix_hidden(dim: int, mult) -> int:
    """fla's RWKV7FeedForward intermediate size: int(dim * mult) rounded up to a multiple of 32."""
    return 32 * ((int(dim * mult) + 31) // 32)


# ----------------------------------------------------------------------------------------------- delta_net
def _dn_dims(spec):
    H, K = spec.heads, spec.head_dim
    return H, K, K, H * K, H * K


def delta_net_params(spec, dim: int) -> int:
    H, K, V, kd, vd = _dn_dims(spec)
    n = dim * (2 * kd + vd) + dim * H + vd * dim + V        # q/k/v proj, b_proj, o_proj, o_norm
    n += _conv_channels(kd, vd) * spec.conv                 # q/k/v short convs (no bias)
    n += dim * vd if spec.gate else 0                       # g_proj
    return n


def delta_net_state(spec, dim: int) -> int:
    H, K, V, kd, vd = _dn_dims(spec)
    return _conv_channels(kd, vd) * max(spec.conv - 1, 0) + H * K * V


def delta_net_flops(spec, dim: int) -> int:
    H, K, V, kd, vd = _dn_dims(spec)
    mm = 2 * dim * (2 * kd + vd + H + vd) + (2 * dim * vd if spec.gate else 0)
    conv = 2 * _conv_channels(kd, vd) * spec.conv
    rec = H * (6 * K * V + 2 * V)        # k^T S, u = beta (v - .), S += k u^T, q^T S
    return mm + conv + rec


def delta_net_resolve(options: dict, dim: int) -> dict:
    o = {**DEFAULTS["delta_net"], **options}
    heads = _int(o["heads"], "heads")
    if o["head_dim"] == AUTO:
        if dim % heads:
            raise ValueError(f"dim={dim} is not divisible by heads={heads} (needed for head_dim='auto')")
        o["head_dim"] = dim // heads
    _int(o["head_dim"], "head_dim")
    _int(o["conv"], "conv", minimum=0)
    return o


# ----------------------------------------------------------------------------------------------- gated_delta_net
def _gdn_dims(spec):
    H, K = spec.heads, spec.head_dim
    V = _value_head_dim(K, spec.expand_v)
    return H, K, V, H * K, H * V


def gated_delta_net_params(spec, dim: int) -> int:
    H, K, V, kd, vd = _gdn_dims(spec)
    n = dim * (2 * kd + vd) + 2 * dim * H + 2 * H            # q/k/v, a_proj, b_proj, A_log, dt_bias
    n += _conv_channels(kd, vd) * spec.conv + V + vd * dim   # short convs, o_norm, o_proj
    n += dim * vd if spec.gate else 0                        # g_proj
    return n


def gated_delta_net_state(spec, dim: int) -> int:
    H, K, V, kd, vd = _gdn_dims(spec)
    return _conv_channels(kd, vd) * max(spec.conv - 1, 0) + H * K * V


def gated_delta_net_flops(spec, dim: int) -> int:
    H, K, V, kd, vd = _gdn_dims(spec)
    mm = 2 * dim * (2 * kd + vd + 2 * H + vd) + (2 * dim * vd if spec.gate else 0)
    conv = 2 * _conv_channels(kd, vd) * spec.conv
    rec = H * (7 * K * V + 2 * V)        # as delta_net + the decay multiply of S
    return mm + conv + rec


def gated_delta_net_resolve(options: dict, dim: int) -> dict:
    o = {**DEFAULTS["gated_delta_net"], **options}
    heads = _int(o["heads"], "heads")
    if o["head_dim"] == AUTO:
        if dim % heads:
            raise ValueError(f"dim={dim} is not divisible by heads={heads} (needed for head_dim='auto')")
        o["head_dim"] = dim // heads
    _value_head_dim(_int(o["head_dim"], "head_dim"), o["expand_v"])
    _int(o["conv"], "conv", minimum=0)
    return o


# ----------------------------------------------------------------------------------------------- rwkv (time mix)
def _lora(dim: int, rank: int, bias: bool = True) -> int:
    return dim * rank + rank * dim + (dim if bias else 0)


def rwkv_params(spec, dim: int) -> int:
    n = 6 * dim + 2 * dim + dim + 4 * dim * dim + 2 * dim   # x_*, k_k/k_a, r_k, r/k/v/o proj, g_norm
    n += _lora(dim, spec.decay_rank) + _lora(dim, spec.a_rank) + _lora(dim, spec.gate_rank, bias=False)
    n += _lora(dim, spec.v_rank) if spec.value_residual else 0
    return n


def rwkv_state(spec, dim: int) -> int:
    return dim + dim * spec.head_dim                        # token shift + H * K * K recurrent state


def rwkv_flops(spec, dim: int) -> int:
    ranks = spec.decay_rank + spec.a_rank + spec.gate_rank + (spec.v_rank if spec.value_residual else 0)
    mm = 2 * 4 * dim * dim + 2 * 2 * dim * ranks
    rec = 9 * dim * spec.head_dim        # per head: exp(w)*S, a^T S, b sa^T, k v^T, r^T S (H K K each)
    return mm + rec


def rwkv_resolve(options: dict, dim: int) -> dict:
    o = {**DEFAULTS["rwkv"], **options}
    if o["head_dim"] == AUTO:
        o["head_dim"] = 64
    head_dim = _int(o["head_dim"], "head_dim")
    if dim % head_dim:
        raise ValueError(f"dim={dim} is not divisible by head_dim={head_dim}")
    for name, value in rwkv_default_ranks(dim, head_dim).items():
        if o[name] == AUTO:
            o[name] = value
        _int(o[name], name)
    if "value_residual" in o and not isinstance(o["value_residual"], bool):
        raise ValueError(f"option value_residual must be a bool, got {o['value_residual']!r}")
    return o


# ----------------------------------------------------------------------------------------------- rwkv_cmix
def rwkv_cmix_params(spec, dim: int) -> int:
    return dim + 2 * dim * cmix_hidden(dim, spec.mult)


def rwkv_cmix_state(spec, dim: int) -> int:
    return dim


def rwkv_cmix_flops(spec, dim: int) -> int:
    return 2 * 2 * dim * cmix_hidden(dim, spec.mult)


def rwkv_cmix_resolve(options: dict, dim: int) -> dict:
    o = {**DEFAULTS["rwkv_cmix"], **options}
    if o["mult"] == AUTO:
        o["mult"] = 4
    if isinstance(o["mult"], bool) or not isinstance(o["mult"], (int, float)) or int(dim * o["mult"]) <= 0:
        raise ValueError(f"option mult must be a positive number, got {o['mult']!r}")
    return o


# ----------------------------------------------------------------------------------------------- registry
FORMULAS = {
    "delta_net": (delta_net_params, delta_net_state, delta_net_flops, delta_net_resolve),
    "gated_delta_net": (gated_delta_net_params, gated_delta_net_state, gated_delta_net_flops,
                        gated_delta_net_resolve),
    "rwkv": (rwkv_params, rwkv_state, rwkv_flops, rwkv_resolve),
    "rwkv_cmix": (rwkv_cmix_params, rwkv_cmix_state, rwkv_cmix_flops, rwkv_cmix_resolve),
}


def _formulas(kind: str):
    if kind not in FORMULAS:
        raise ValueError(f"unknown kind {kind!r} for delta-family costs; valid: {', '.join(FORMULAS)}")
    return FORMULAS[kind]


def params(spec, dim: int) -> int:
    return _formulas(spec.kind)[0](spec, dim)


def state_numel(spec, dim: int) -> int:
    return _formulas(spec.kind)[1](spec, dim)


def flops(spec, dim: int) -> int:
    return _formulas(spec.kind)[2](spec, dim)


def resolve(options: dict, dim: int, kind: str | None = None) -> dict:
    kind = options.get("kind") if kind is None else kind
    return _formulas(kind)[3](options, dim)
