"""Exact cost formulas for the SSM/RNN kinds: mamba, mamba2, gru, griffin_lru (pure Python, no torch).

Mirrors the torch layers in backends/hybridc_torch/layers/{mamba,mamba2,gru,griffin_lru}.py and docs/layers/ssm.md:
    Mamba-1: Gu & Dao 2023 (mamba_ssm ``Mamba``);  Mamba-2: Dao & Gu 2024 (mamba_ssm ``Mamba2``);
    GRU: Cho et al. 2014 (torch.nn.GRU);  Griffin RG-LRU: De et al. 2024 (recurrentgemma ``RecurrentBlock``).

params(spec, dim)      exact parameter count of the torch module
state_numel(spec, dim) elements of the decode state per sequence (sum of init_state(1) numels)
flops(spec, dim)       forward FLOPs per token: 2 per multiply-add for matmuls, convs and the recurrence; each
                       elementwise op (activation, exp, gate product, norm step) counted as 1 FLOP per element
resolve(options, dim)  fills "auto" options and validates them (ValueError on inconsistent options)

Glossary of symbols:
    D: model dim   E: inner dim   N: state size   R: dt_rank   K: conv width   H: heads / GRU hidden   P: head dim
    G: groups   X: Mamba-2 conv channels (E + 2GN)   W: Griffin recurrence width   M: Griffin heads
"""

from __future__ import annotations

import math

__all__ = ["FORMULAS", "params", "state_numel", "flops", "resolve"]


def _pos_int(kind: str, name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{kind}: option {name} must be a positive integer, got {value!r}")
    return value


def _inner(kind: str, expand, dim: int) -> int:
    """E = expand * dim; must be a positive integer (the torch layer uses int(expand * dim))."""
    inner = expand * dim
    if isinstance(expand, bool) or not isinstance(expand, (int, float)) or inner < 1 or inner != int(inner):
        raise ValueError(f"{kind}: expand*dim must be a positive integer, got expand={expand!r}, dim={dim}")
    return int(inner)


# ----------------------------------------------------------------------------------------------------- mamba
def _mamba_dims(spec, dim):
    return int(spec.expand * dim), spec.state, spec.dt_rank, spec.conv


def mamba_params(spec, dim: int) -> int:
    E, N, R, K = _mamba_dims(spec, dim)
    # in_proj + conv1d (w, b) + x_proj + dt_proj (w, b) + A_log + D + out_proj
    return dim * 2 * E + E * K + E + E * (R + 2 * N) + R * E + E + E * N + E + E * dim


def mamba_state_numel(spec, dim: int) -> int:
    E, N, _, K = _mamba_dims(spec, dim)
    return E * (K - 1) + E * N  # conv window + ssm state


def mamba_flops(spec, dim: int) -> int:
    E, N, R, K = _mamba_dims(spec, dim)
    matmuls = 2 * dim * 2 * E + 2 * E * (R + 2 * N) + 2 * R * E + 2 * E * dim
    conv = 2 * E * K + E + E          # taps + bias + silu
    dt = 2 * E                        # bias + softplus
    # per (e, n): dt*A, exp, dt*u*B (1 mul, dt*u shared), h update (1 madd = 2), C.h (1 madd = 2)
    scan = 7 * E * N + E
    gate = 2 * E + E + E              # D skip (madd) + silu(z) + product
    return matmuls + conv + dt + scan + gate


def mamba_resolve(options: dict, dim: int) -> dict:
    out = dict(options)
    if out.get("dt_rank") == "auto":
        out["dt_rank"] = math.ceil(dim / 16)
    for name in ("state", "conv", "dt_rank"):
        if name in out:
            _pos_int("mamba", name, out[name])
    if "expand" in out:
        _inner("mamba", out["expand"], dim)
    return out


# ---------------------------------------------------------------------------------------------------- mamba2
def _mamba2_dims(spec, dim):
    E = int(spec.expand * dim)
    return E, E // spec.head_dim, spec.groups * spec.state, spec.conv


def mamba2_params(spec, dim: int) -> int:
    E, H, GN, K = _mamba2_dims(spec, dim)
    X = E + 2 * GN
    # in_proj [z, x, B, C, dt] + conv1d (w, b) + dt_bias + A_log + D + norm.weight + out_proj
    return dim * (E + X + H) + X * K + X + 3 * H + E + E * dim


def mamba2_state_numel(spec, dim: int) -> int:
    E, _, GN, K = _mamba2_dims(spec, dim)
    return (E + 2 * GN) * (K - 1) + E * spec.state  # conv window + (H, P, N) ssm state


def mamba2_flops(spec, dim: int) -> int:
    E, H, GN, K = _mamba2_dims(spec, dim)
    X, N = E + 2 * GN, spec.state
    matmuls = 2 * dim * (E + X + H) + 2 * E * dim
    conv = 2 * X * K + X + X          # taps + bias + silu
    dt = 2 * H + 2 * H                # bias + softplus, dt*A + exp
    # per (h, p, n): (dt*x)*B (1 mul), decay*S + . (1 madd = 2), C.S (1 madd = 2); per (h, p): dt*x
    scan = 5 * E * N + E
    tail = 2 * E + 2 * E + 4 * E      # D skip (madd), silu(z) * y, group RMSNorm (square-sum, scale, weight)
    return matmuls + conv + dt + scan + tail


def mamba2_resolve(options: dict, dim: int) -> dict:
    out = dict(options)
    for name in ("state", "conv", "head_dim", "groups", "chunk"):
        if name in out:
            _pos_int("mamba2", name, out[name])
    E = _inner("mamba2", out.get("expand", 2), dim)
    head_dim, groups = out.get("head_dim", 64), out.get("groups", 1)
    if E % head_dim:
        raise ValueError(f"mamba2: expand*dim={E} is not divisible by head_dim={head_dim}")
    if (E // head_dim) % groups:
        raise ValueError(f"mamba2: number of heads {E // head_dim} (expand*dim/head_dim) is not divisible by "
                         f"groups={groups}")
    return out


# ------------------------------------------------------------------------------------------------------- gru
def gru_params(spec, dim: int) -> int:
    H = spec.hidden
    return 3 * H * dim + 3 * H * H + 6 * H + (H * dim if H != dim else 0)


def gru_state_numel(spec, dim: int) -> int:
    return spec.hidden


def gru_flops(spec, dim: int) -> int:
    H = spec.hidden
    matmuls = 2 * 3 * H * dim + 2 * 3 * H * H + (2 * H * dim if H != dim else 0)
    # biases (6H), r/z sigmoids (2H), r * hn (H), + (H), tanh (H), h = n + z * (h - n) (3H)
    return matmuls + 14 * H


def gru_resolve(options: dict, dim: int) -> dict:
    out = dict(options)
    if out.get("hidden") == "auto":
        out["hidden"] = dim
    if "hidden" in out:
        _pos_int("gru", "hidden", out["hidden"])
    return out


# ----------------------------------------------------------------------------------------------- griffin_lru
def griffin_lru_params(spec, dim: int) -> int:
    W, M, K = spec.width, spec.heads, spec.conv
    # linear_y, linear_x (w, b) + linear_out (w, b) + conv_1d (w, b) + a_param + 2 block-diagonal gates (w, b)
    return 2 * (dim * W + W) + (W * dim + dim) + (K * W + W) + W + 2 * (W * (W // M) + W)


def griffin_lru_state_numel(spec, dim: int) -> int:
    W, K = spec.width, spec.conv
    return W * (K - 1) + W  # conv window + RG-LRU state (the int64 position counter is bookkeeping, not counted)


def griffin_lru_flops(spec, dim: int) -> int:
    W, M, K = spec.width, spec.heads, spec.conv
    matmuls = 2 * 2 * dim * W + 2 * W * dim + 2 * 2 * W * (W // M)
    biases = 2 * W + dim + 2 * W      # linear_y/x, linear_out, gate biases
    conv = 2 * K * W + W
    # gelu, 2 sigmoids, softplus*r*c (3), exp(log a), exp(2 log a), 1-., sqrt, x*i*mult (2), h update (2), h*y
    rglru = 15 * W
    return matmuls + biases + conv + rglru


def griffin_lru_resolve(options: dict, dim: int) -> dict:
    out = dict(options)
    if out.get("width") == "auto":
        out["width"] = dim
    for name in ("width", "heads", "conv"):
        if name in out:
            _pos_int("griffin_lru", name, out[name])
    width, heads = out.get("width", dim), out.get("heads", 4)
    if width % heads:
        raise ValueError(f"griffin_lru: width={width} is not divisible by heads={heads}")
    return out


FORMULAS = {
    "mamba": (mamba_params, mamba_state_numel, mamba_flops, mamba_resolve),
    "mamba2": (mamba2_params, mamba2_state_numel, mamba2_flops, mamba2_resolve),
    "gru": (gru_params, gru_state_numel, gru_flops, gru_resolve),
    "griffin_lru": (griffin_lru_params, griffin_lru_state_numel, griffin_lru_flops, griffin_lru_resolve),
}


def _formula(spec, index: int):
    if spec.kind not in FORMULAS:
        raise ValueError(f"no SSM cost formula for kind {spec.kind!r}; known: {sorted(FORMULAS)}")
    return FORMULAS[spec.kind][index]


def params(spec, dim: int) -> int:
    """Exact parameter count; dispatches on spec.kind."""
    return _formula(spec, 0)(spec, dim)


def state_numel(spec, dim: int) -> int:
    """Decode-state elements per sequence; dispatches on spec.kind."""
    return _formula(spec, 1)(spec, dim)


def flops(spec, dim: int) -> int:
    """Forward FLOPs per token; dispatches on spec.kind."""
    return _formula(spec, 2)(spec, dim)


def resolve(options: dict, dim: int, kind: str | None = None) -> dict:
    """Resolve "auto" options and validate them; the kind is `kind` or else options["kind"]."""
    kind = options.get("kind") if kind is None else kind
    if kind not in FORMULAS:
        raise ValueError(f"no SSM cost formula for kind {kind!r}; known: {sorted(FORMULAS)}")
    return FORMULAS[kind][3](options, dim)
