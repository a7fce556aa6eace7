"""RWKV-7 time mixing (``init`` / ``apply`` / ``step``) and channel mixing (``*channel_mix*``) layers (JAX).

Paper: Peng et al., "RWKV-7 "Goose" with Expressive Dynamic State Evolution" (2025, arXiv:2503.14456).
Reference implementation: flash-linear-attention ``fla/layers/rwkv7.py`` (class ``RWKV7Attention`` with its defaults
value_dim = hidden_size, fuse_norm=False, norm_eps=1e-5) and ``fla/models/rwkv7/modeling_rwkv7.py``
(``RWKV7FeedForward``). Mirrors hybridc_torch/layers/rwkv.py (classes ``RWKV7`` and ``RWKV7ChannelMix``): same
parameter names, shapes, init and math.

Time mixing, with x_prev the previous (normed) input and lerp(x, x_prev, m) = x + (x_prev - x) * m:
    r = r_proj(x_r-lerp);  w = -exp(-1/2) * sigmoid(w_lora(x_w-lerp))   (log decay);  k = k_proj(x_k-lerp)
    v = v_proj(x_v-lerp)  [value residual: v = lerp(v, v_first, sigmoid(v_lora(x_v-lerp)))]
    a = sigmoid(a_lora(x_a-lerp));  g = g_lora(x_g-lerp)  (sigmoid inside)
    kk = normalize(k * k_k) per head;  k = k * (1 + (a - 1) * k_a)
    o = rwkv7(r, w, k, v, -kk, kk * a);  o = GroupNorm(o) + ((r * k * r_k).sum per head) * v
    y = o_proj(o * g)
Channel mixing:  y = value(relu(key(lerp(x, x_prev, x_k)))^2).

Value residual (fla's ``v_first``): ``apply`` / ``step`` take and return it, and the model threads it from layer to
layer within one apply / step call (``CARRIES_V_FIRST``). A layer with value_residual=False passes its own v on as
v_first ((B, L, value_dim) in apply, (B, value_dim) in step); later layers with value_residual=True lerp towards it
and pass it on unchanged.

Init: fla's layer-position-dependent RWKV-7 init, with the layer position taken from the optional spec attributes
``layer_idx`` (default 0) and ``n_layers`` (default 1); deterministic curves are computed in fp64 with numpy.

Dimension glossary:
    B batch, L sequence length, D model dim (= key dim = value dim), H heads (D // head_dim), K head dim,
    R LoRA rank, F channel-mix hidden size.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from ..ops.rwkv7 import rwkv7, rwkv7_step
from .common import linear

__all__ = ["init", "init_state", "apply", "step", "init_channel_mix", "channel_mix_init_state",
           "channel_mix_apply", "channel_mix_step", "lora_init", "lora", "cmix_hidden"]

OP = "rwkv7"  # the recurrence it runs (describe --kernels)
CARRIES_V_FIRST = True  # apply / step take and return v_first (threaded by hybridc_jax.model.run_mixer)

DECAY_SCALE = math.exp(-0.5)   # 0.6065306597126334: w = -DECAY_SCALE * sigmoid(.) lies in (-e^-0.5, 0)
NORM_EPS = 1e-5
MIX_NAMES = ("x_r", "x_w", "x_k", "x_v", "x_a", "x_g")
LORA_ACTS = {None: lambda x: x, "tanh": jnp.tanh, "sigmoid": jax.nn.sigmoid}


def cmix_hidden(dim: int, mult) -> int:
    """fla's RWKV7FeedForward intermediate size: int(dim * mult) rounded up to a multiple of 32."""
    return 32 * ((int(dim * mult) + 31) // 32)


def _token_shift(x, state):
    """x (B, L, D) -> (x_prev - x (B, L, D), new shift state = last input (B, D))."""
    B, L, D = x.shape
    prev = jnp.zeros((B, D), x.dtype) if state is None else state["shift"].astype(x.dtype)   # (B, D)
    x_prev = jnp.concatenate([prev[:, None], x[:, :-1]], axis=1)                             # (B, L, D)
    return x_prev - x, (x[:, -1] if L > 0 else prev)


def _orthogonal(key, out_dim: int, in_dim: int, gain: float = 1.0) -> jax.Array:
    """Orthogonal (out, in) matrix times gain, in fp32 (torch's nn.init.orthogonal_ distribution)."""
    return jax.nn.initializers.orthogonal(scale=gain)(key, (out_dim, in_dim), jnp.float32)


def lora_init(in_dim: int, out_dim: int, rank: int, bias=None, *, key) -> dict[str, jax.Array]:
    """fla's LoRA: Linear(in, R, no bias) -> act -> Linear(R, out); down zero-init, up orthogonal * 0.1.

    bias: None for no bias, else the (out,) init values (torch: zeros, then ``set_bias``)."""
    gain = math.sqrt(rank / out_dim) if rank > out_dim else 1.0
    p = {"lora.0.weight": jnp.zeros((rank, in_dim), jnp.float32),                    # (R, in)
         "lora.2.weight": _orthogonal(key, out_dim, rank, gain * 0.1)}               # (out, R)
    if bias is not None:
        p["lora.2.bias"] = jnp.asarray(bias, jnp.float32)                            # (out,)
    return p


def lora(params, name: str, x, activation: str | None = None):
    """x (..., in) -> (..., out) through params[name + '.lora.{0,2}.*']."""
    h = LORA_ACTS[activation](linear(params, f"{name}.lora.0", x))                  # (..., R)
    return linear(params, f"{name}.lora.2", h)                                      # (..., out)


def _init_profiles(dim: int, head_dim: int, layer_idx: int, n_layers: int) -> dict[str, np.ndarray]:
    """fla's RWKV-7 per-channel init curves (computed in fp64), each (D,)."""
    r01 = layer_idx / (n_layers - 1) if n_layers > 1 else 0.0     # 0 -> 1 over depth
    r10 = 1.0 - layer_idx / n_layers                                 # 1 -> ~0 over depth
    n = np.arange(dim, dtype=np.float64)
    half = (head_dim - 1) / 2 if head_dim > 1 else 1.0
    zigzag = ((n % head_dim) - half) / half
    return {
        "ddd": n / dim, "r10": r10,
        "linear": n / max(dim - 1, 1) - 0.5,
        "zigzag": zigzag * np.abs(zigzag),
        "www": -6 + 6 * (n / max(dim - 1, 1)) ** (1 + r01 ** 0.3),
    }


def _layer_pos(spec) -> tuple[int, int]:
    """Optional init-only hints (layer_idx, n_layers), defaults (0, 1)."""
    layer_idx, n_layers = getattr(spec, "layer_idx", None), getattr(spec, "n_layers", None)
    return (0 if layer_idx is None else int(layer_idx)), (1 if n_layers is None else int(n_layers))


def _dims(dim: int, spec) -> tuple[int, int]:
    """(H, K) from the spec's head_dim."""
    head_dim = int(spec.head_dim)
    if head_dim <= 0 or dim % head_dim:
        raise ValueError(f"RWKV7: dim={dim} must be divisible by head_dim={head_dim}")
    return dim // head_dim, head_dim


# --- time mixing ---------------------------------------------------------------------------------------------------------
def init(dim: int, spec, *, key) -> dict[str, jax.Array]:
    """spec: head_dim, decay_rank, a_rank, v_rank, gate_rank, value_residual (+ optional layer_idx, n_layers).

    Parameters named and shaped as the torch layer's state_dict (same order)."""
    H, K = _dims(dim, spec)
    layer_idx, n_layers = _layer_pos(spec)
    p = _init_profiles(dim, K, layer_idx, n_layers)
    f32 = lambda a: jnp.asarray(a, jnp.float32)  # noqa: E731
    kr, kk, kv, kw, kvl, ka, kg = jax.random.split(key, 7)
    params = {name: f32(1.0 - p["ddd"] ** (power * p["r10"])).reshape(1, 1, dim)   # (1, 1, D)
              for name, power in zip(MIX_NAMES, (0.2, 0.9, 0.7, 0.7, 0.9, 0.2))}
    params |= {"k_k": f32(0.71 - p["linear"] * 0.1), "k_a": jnp.full((dim,), 1.02, jnp.float32),
               "r_k": jnp.full((H, K), -0.04, jnp.float32),
               "r_proj.weight": _orthogonal(kr, dim, dim), "k_proj.weight": _orthogonal(kk, dim, dim, 0.1),
               "v_proj.weight": _orthogonal(kv, dim, dim), "o_proj.weight": jnp.zeros((dim, dim), jnp.float32)}
    loras = {"w_lora": (spec.decay_rank, p["www"] + 0.5 + p["zigzag"] * 2.5, kw)}
    if spec.value_residual:
        loras["v_lora"] = (spec.v_rank, 0.73 - p["linear"] * 0.4, kvl)
    loras |= {"a_lora": (spec.a_rank, -0.19 + p["zigzag"] * 0.3 + p["linear"] * 0.4, ka),
              "g_lora": (spec.gate_rank, None, kg)}
    for name, (rank, bias, k) in loras.items():
        params |= {f"{name}.{n}": w for n, w in lora_init(dim, dim, int(rank), bias, key=k).items()}
    return params | {"g_norm.weight": jnp.full((dim,), ((layer_idx + 1) / n_layers) ** 0.7, jnp.float32),
                     "g_norm.bias": jnp.zeros((dim,), jnp.float32)}


def init_state(dim: int, spec, batch_size: int, dtype=jnp.float32) -> dict[str, jax.Array]:
    H, K = _dims(dim, spec)
    acc = jnp.promote_types(dtype, jnp.float32)
    return {"shift": jnp.zeros((batch_size, dim), dtype),                    # (B, D)
            "recurrent": jnp.zeros((batch_size, H, K, K), acc)}              # (B, H, K, K)


def _value(params, v, xv, spec, v_first):
    """(v, the v_first to pass on): the first layer passes its own v on, later layers (value_residual) lerp
    towards v_first and pass it on unchanged. v, xv, v_first (..., D)."""
    if not spec.value_residual:
        return v, v
    if v_first is None:
        raise RuntimeError("RWKV7 with value_residual=True needs v_first from an earlier rwkv layer "
                           "with value_residual=False in the same apply/step call")
    mix = jax.nn.sigmoid(lora(params, "v_lora", xv))                         # (..., D)
    return v + mix * (v_first.astype(v.dtype) - v), v_first                  # torch.lerp


def _normalize(x, eps: float = 1e-12):
    """F.normalize(x, dim=-1): x / max(||x||, eps), NaN-free gradient at 0."""
    return x / jnp.sqrt(jnp.maximum(jnp.sum(jnp.square(x), axis=-1, keepdims=True), eps * eps))


def _mix(params, x, delta, spec, v_first):
    """x, delta (..., D) -> r, w, k, v, a (..., H, K), g (..., D), kk (..., H, K), v_first (..., D)."""
    xr, xw, xk, xv, xa, xg = (x + delta * params[n].reshape(-1) for n in MIX_NAMES)
    r = linear(params, "r_proj", xr)                                         # (..., D)
    w = -DECAY_SCALE * jax.nn.sigmoid(lora(params, "w_lora", xw, "tanh"))    # (..., D)
    k = linear(params, "k_proj", xk)                                         # (..., D)
    v, v_first = _value(params, linear(params, "v_proj", xv), xv, spec, v_first)   # (..., D)
    a = jax.nn.sigmoid(lora(params, "a_lora", xa))                           # (..., D)
    g = lora(params, "g_lora", xg, "sigmoid")                                # (..., D)
    heads = x.shape[:-1] + params["r_k"].shape                               # (..., H, K)
    kk = _normalize((k * params["k_k"]).reshape(heads))                      # (..., H, K)
    k = k + k * (a - 1) * params["k_a"]                                      # (..., D)
    r, w, k, v, a = (t.reshape(heads) for t in (r, w, k, v, a))              # (..., H, K)
    return r, w, k, v, a, g, kk, v_first


def _group_norm(o, weight, bias, eps: float):
    """nn.GroupNorm(H, D) on o (..., H, K) viewed as (..., D): per-head mean/var, per-channel affine -> (..., D)."""
    mu = jnp.mean(o, axis=-1, keepdims=True)                                 # (..., H, 1)
    var = jnp.mean(jnp.square(o - mu), axis=-1, keepdims=True)               # (..., H, 1)
    y = (o - mu) * jax.lax.rsqrt(var + eps)                                  # (..., H, K)
    return y.reshape(o.shape[:-2] + (weight.shape[0],)) * weight + bias      # (..., D)


def _out(params, o, r, k, v, g):
    """o, r, k, v (..., H, K), g (..., D) -> y (..., D)."""
    o = _group_norm(o, params["g_norm.weight"], params["g_norm.bias"], o.shape[-1] * NORM_EPS)   # (..., D)
    bonus = (jnp.sum(r * k * params["r_k"], axis=-1, keepdims=True) * v).reshape(o.shape)        # (..., D)
    return linear(params, "o_proj", (o + bonus) * g)                                               # (..., D)


def apply(params, x, spec, state=None, ctx=None, v_first=None):
    """x (B, L, D), v_first (B, L, D) or None -> (y (B, L, D), new_state or None, v_first (B, L, D))."""
    delta, shift = _token_shift(x, state)                                    # (B, L, D), (B, D)
    r, w, k, v, a, g, kk, v_first = _mix(params, x, delta, spec, v_first)    # (B, L, H, K)
    o, S = rwkv7(r, w, k, v, -kk, kk * a, scale=1.0,
                 initial_state=None if state is None else state["recurrent"],
                 output_final_state=state is not None)                       # (B, L, H, K)
    y = _out(params, o, r, k, v, g)                                          # (B, L, D)
    return y, (None if state is None else {"shift": shift, "recurrent": S}), v_first


def step(params, x_t, spec, state, ctx=None, v_first=None):
    """x_t (B, D), v_first (B, D) or None -> (y_t (B, D), new_state, v_first (B, D))."""
    delta = state["shift"].astype(x_t.dtype) - x_t                           # (B, D)
    r, w, k, v, a, g, kk, v_first = _mix(params, x_t, delta, spec, v_first)  # (B, H, K)
    o, S = rwkv7_step(r, w, k, v, -kk, kk * a, state["recurrent"], scale=1.0)   # (B, H, K)
    return _out(params, o, r, k, v, g), {"shift": x_t, "recurrent": S}, v_first


# --- channel mixing (the FFN of rwkv layers) -----------------------------------------------------------------------------
def init_channel_mix(dim: int, spec, *, key) -> dict[str, jax.Array]:
    """spec: mult (+ optional layer_idx, n_layers, which only shape the x_k init). torch: RWKV7ChannelMix."""
    hidden = cmix_hidden(dim, spec.mult)
    if hidden <= 0:
        raise ValueError(f"RWKV7ChannelMix: dim * mult must be positive, got {dim} * {spec.mult}")
    layer_idx, n_layers = _layer_pos(spec)
    r10 = 1.0 - layer_idx / n_layers
    ddd = np.arange(dim, dtype=np.float64) / dim
    return {"x_k": jnp.asarray(1.0 - ddd ** (r10 ** 4), jnp.float32),        # (D,)
            "key.weight": _orthogonal(key, hidden, dim),                      # (F, D)
            "value.weight": jnp.zeros((dim, hidden), jnp.float32)}            # (D, F)


def channel_mix_init_state(dim: int, spec, batch_size: int, dtype=jnp.float32) -> dict[str, jax.Array]:
    return {"shift": jnp.zeros((batch_size, dim), dtype)}                     # (B, D)


def _ffn(params, x, delta):
    h = jax.nn.relu(linear(params, "key", x + delta * params["x_k"]))        # (..., F)
    return linear(params, "value", h * h)                                     # (..., D)


def channel_mix_apply(params, x, spec, state=None, ctx=None):
    """x (B, L, D) -> (y (B, L, D), new_state or None)."""
    delta, shift = _token_shift(x, state)                                     # (B, L, D), (B, D)
    return _ffn(params, x, delta), (None if state is None else {"shift": shift})


def channel_mix_step(params, x_t, spec, state, ctx=None):
    """x_t (B, D) -> (y_t (B, D), new_state)."""
    return _ffn(params, x_t, state["shift"].astype(x_t.dtype) - x_t), {"shift": x_t}
