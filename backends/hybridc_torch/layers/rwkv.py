"""RWKV-7 time mixing (``RWKV7``) and channel mixing (``RWKV7ChannelMix``) layers (torch).

Paper: Peng et al., "RWKV-7 "Goose" with Expressive Dynamic State Evolution" (2025, arXiv:2503.14456).
Reference implementation: flash-linear-attention ``fla/layers/rwkv7.py`` (class ``RWKV7Attention`` with its defaults
value_dim = hidden_size, fuse_norm=False, norm_eps=1e-5) and ``fla/models/rwkv7/modeling_rwkv7.py``
(``RWKV7FeedForward``). Parameter names, shapes and init match them, so fla checkpoints map 1:1 by name.

Time mixing, with x_prev the previous (normed) input and lerp(x, x_prev, m) = x + (x_prev - x) * m:
    r = r_proj(x_r-lerp);  w = -exp(-1/2) * sigmoid(w_lora(x_w-lerp))   (log decay);  k = k_proj(x_k-lerp)
    v = v_proj(x_v-lerp)  [value residual: v = lerp(v, v_first, sigmoid(v_lora(x_v-lerp)))]
    a = sigmoid(a_lora(x_a-lerp));  g = g_lora(x_g-lerp)  (sigmoid inside)
    kk = normalize(k * k_k) per head;  k = k * (1 + (a - 1) * k_a)
    o = rwkv7(r, w, k, v, -kk, kk * a);  o = GroupNorm(o) + ((r * k * r_k).sum per head) * v
    y = o_proj(o * g)
Channel mixing:  y = value(relu(key(lerp(x, x_prev, x_k)))^2).

Value residual (fla's ``v_first``): ``RWKV7`` takes and returns it, and the model threads it from layer to layer
within one forward / step call. A layer with value_residual=False passes its own v on as v_first ((B, L, value_dim)
in forward, (B, value_dim) in step); later layers with value_residual=True lerp towards it and pass it on unchanged.

Init: fla's layer-position-dependent RWKV-7 init, with the layer position taken from the optional spec attributes
``layer_idx`` (default 0) and ``n_layers`` (default 1); fla itself skips it when built without a layer_idx.

Dimension glossary:
    B batch, L sequence length, D model dim (= key dim = value dim), H heads (D // head_dim), K head dim,
    R LoRA rank, F channel-mix hidden size.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..ops.rwkv7 import rwkv7, rwkv7_step

__all__ = ["RWKV7", "RWKV7ChannelMix", "LoRA", "cmix_hidden", "LAYER", "OP"]

DECAY_SCALE = math.exp(-0.5)   # 0.6065306597126334: w = -DECAY_SCALE * sigmoid(.) lies in (-e^-0.5, 0)
NORM_EPS = 1e-5


def cmix_hidden(dim: int, mult) -> int:
    """fla's RWKV7FeedForward intermediate size: int(dim * mult) rounded up to a multiple of 32."""
    return 32 * ((int(dim * mult) + 31) // 32)


def _token_shift(x, state):
    """x (B, L, D) -> (x_prev - x (B, L, D), new shift state = last input (B, D))."""
    B, L, D = x.shape
    prev = x.new_zeros(B, D) if state is None else state["shift"].to(x.dtype)   # (B, D)
    x_prev = torch.cat([prev[:, None], x[:, :-1]], dim=1)                       # (B, L, D)
    return x_prev - x, (x[:, -1] if L > 0 else prev)


def _orthogonal_(weight: torch.Tensor, gain: float = 1.0):
    """Orthogonal init computed in fp32, as fla does."""
    with torch.no_grad():
        w32 = weight.float()
        nn.init.orthogonal_(w32, gain=gain)
        weight.copy_(w32)


class LoRA(nn.Module):
    """fla's LoRA: Linear(in, R, no bias) -> activation -> Linear(R, out); down zero-init, up orthogonal * 0.1."""

    def __init__(self, in_dim: int, out_dim: int, rank: int, bias: bool = True, activation: str | None = None):
        super().__init__()
        acts = {None: nn.Identity, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}
        self.lora = nn.Sequential(nn.Linear(in_dim, rank, bias=False), acts[activation](),
                                  nn.Linear(rank, out_dim, bias=bias))
        nn.init.zeros_(self.lora[0].weight)
        gain = math.sqrt(rank / out_dim) if rank > out_dim else 1.0
        _orthogonal_(self.lora[2].weight, gain=gain * 0.1)
        if bias:
            nn.init.zeros_(self.lora[2].bias)

    def set_bias(self, value: torch.Tensor):
        with torch.no_grad():
            self.lora[2].bias.copy_(value)

    def forward(self, x):
        return self.lora(x)


def _init_profiles(dim: int, head_dim: int, layer_idx: int, n_layers: int) -> dict[str, torch.Tensor]:
    """fla's RWKV-7 per-channel init curves (computed in fp64), each (D,)."""
    r01 = layer_idx / (n_layers - 1) if n_layers > 1 else 0.0     # 0 -> 1 over depth
    r10 = 1.0 - layer_idx / n_layers                                 # 1 -> ~0 over depth
    n = torch.arange(dim, dtype=torch.float64)
    half = (head_dim - 1) / 2 if head_dim > 1 else 1.0
    zigzag = ((n % head_dim) - half) / half
    return {
        "ddd": n / dim, "r10": torch.tensor(r10, dtype=torch.float64),
        "linear": n / max(dim - 1, 1) - 0.5,
        "zigzag": zigzag * zigzag.abs(),
        "www": -6 + 6 * (n / max(dim - 1, 1)) ** (1 + r01 ** 0.3),
    }


class RWKV7(nn.Module):
    """RWKV-7 time mixing. spec: head_dim, decay_rank, a_rank, v_rank, gate_rank, value_residual
    (+ optional layer_idx, n_layers used only for the init). forward and step take and return the value-residual
    stream v_first besides the state."""

    carries_v_first = True   # the model passes v_first in and takes it back out (hybridc_torch.model.run_mixer)

    def __init__(self, dim: int, spec, *, impl: str = "auto"):
        super().__init__()
        head_dim = int(spec.head_dim)
        if head_dim <= 0 or dim % head_dim:
            raise ValueError(f"RWKV7: dim={dim} must be divisible by head_dim={head_dim}")
        self.dim, self.head_dim, self.num_heads = dim, head_dim, dim // head_dim
        self.key_dim = self.value_dim = dim
        self.value_residual, self.impl = bool(spec.value_residual), impl
        for name in ("x_r", "x_w", "x_k", "x_v", "x_a", "x_g"):
            setattr(self, name, nn.Parameter(torch.zeros(1, 1, dim)))
        self.k_k = nn.Parameter(torch.zeros(dim))
        self.k_a = nn.Parameter(torch.zeros(dim))
        self.r_k = nn.Parameter(torch.zeros(self.num_heads, head_dim))
        self.r_proj = nn.Linear(dim, dim, bias=False)
        self.k_proj = nn.Linear(dim, dim, bias=False)
        self.v_proj = nn.Linear(dim, dim, bias=False)
        self.o_proj = nn.Linear(dim, dim, bias=False)
        self.w_lora = LoRA(dim, dim, int(spec.decay_rank), activation="tanh")
        if self.value_residual:
            self.v_lora = LoRA(dim, dim, int(spec.v_rank), activation=None)
        self.a_lora = LoRA(dim, dim, int(spec.a_rank), activation=None)
        self.g_lora = LoRA(dim, dim, int(spec.gate_rank), activation="sigmoid", bias=False)
        self.g_norm = nn.GroupNorm(self.num_heads, dim, eps=head_dim * NORM_EPS, affine=True)
        layer_idx, n_layers = getattr(spec, "layer_idx", None), getattr(spec, "n_layers", None)
        self._rwkv_init(0 if layer_idx is None else int(layer_idx), 1 if n_layers is None else int(n_layers))

    @torch.no_grad()
    def _rwkv_init(self, layer_idx: int, n_layers: int):
        p = _init_profiles(self.dim, self.head_dim, layer_idx, n_layers)
        for name, power in (("x_r", 0.2), ("x_w", 0.9), ("x_k", 0.7), ("x_v", 0.7), ("x_a", 0.9), ("x_g", 0.2)):
            getattr(self, name).copy_((1.0 - p["ddd"] ** (power * p["r10"])).view(1, 1, -1))
        self.k_a.fill_(1.02)
        self.r_k.fill_(-0.04)
        self.k_k.copy_(0.71 - p["linear"] * 0.1)
        self.w_lora.set_bias(p["www"] + 0.5 + p["zigzag"] * 2.5)
        self.a_lora.set_bias(-0.19 + p["zigzag"] * 0.3 + p["linear"] * 0.4)
        if self.value_residual:
            self.v_lora.set_bias(0.73 - p["linear"] * 0.4)
        self.g_norm.weight.fill_(((layer_idx + 1) / n_layers) ** 0.7)
        _orthogonal_(self.r_proj.weight)
        _orthogonal_(self.k_proj.weight, gain=0.1)
        _orthogonal_(self.v_proj.weight)
        self.o_proj.weight.zero_()

    def init_state(self, batch_size: int, device=None, dtype=torch.float32) -> dict[str, torch.Tensor]:
        acc = torch.promote_types(dtype, torch.float32)
        return {"shift": torch.zeros(batch_size, self.dim, device=device, dtype=dtype),          # (B, D)
                "recurrent": torch.zeros(batch_size, self.num_heads, self.head_dim, self.head_dim,
                                         device=device, dtype=acc)}                                # (B, H, K, K)

    def _value(self, v, xv, v_first):
        """(v, the v_first to pass on): the first layer passes its own v on, later layers (value_residual) lerp
        towards v_first and pass it on unchanged. v, xv, v_first (..., D)."""
        if not self.value_residual:
            return v, v
        if v_first is None:
            raise RuntimeError("RWKV7 with value_residual=True needs v_first from an earlier rwkv layer "
                               "with value_residual=False in the same forward/step call")
        return torch.lerp(v, v_first.to(v.dtype), torch.sigmoid(self.v_lora(xv))), v_first

    def _mix(self, x, delta, v_first):
        """x, delta (..., D) -> r, w, k, a, kk (..., H, K), v (..., H, K), g (..., D), v_first (..., D)."""
        xr, xw, xk, xv, xa, xg = (torch.addcmul(x, delta, getattr(self, n).view(-1))
                                  for n in ("x_r", "x_w", "x_k", "x_v", "x_a", "x_g"))
        r = self.r_proj(xr)                                                  # (..., D)
        w = -DECAY_SCALE * torch.sigmoid(self.w_lora(xw))                    # (..., D)
        k = self.k_proj(xk)                                                  # (..., D)
        v, v_first = self._value(self.v_proj(xv), xv, v_first)              # (..., D)
        a = torch.sigmoid(self.a_lora(xa))                                   # (..., D)
        g = self.g_lora(xg)                                                  # (..., D)
        heads = (self.num_heads, self.head_dim)
        kk = F.normalize((k * self.k_k).unflatten(-1, heads), dim=-1, p=2.0)  # (..., H, K)
        k = k.addcmul(k * (a - 1), self.k_a)                                 # (..., D)
        r, w, k, v, a = (t.unflatten(-1, heads) for t in (r, w, k, v, a))    # (..., H, K)
        return r, w, k, v, a, g, kk, v_first

    def _out(self, o, r, k, v, g):
        """o, r, k, v (..., H, K), g (..., D) -> y (..., D)."""
        lead = o.shape[:-2]
        o = self.g_norm(o.reshape(-1, self.value_dim)).view(*lead, self.value_dim)   # (..., D)
        bonus = ((r * k * self.r_k).sum(-1, keepdim=True) * v).flatten(-2)           # (..., D)
        return self.o_proj((o + bonus) * g)                                           # (..., D)

    def forward(self, x, state=None, ctx=None, v_first=None):
        """x (B, L, D), v_first (B, L, D) or None -> (y (B, L, D), new_state or None, v_first (B, L, D))."""
        delta, shift = _token_shift(x, state)                                # (B, L, D), (B, D)
        r, w, k, v, a, g, kk, v_first = self._mix(x, delta, v_first)         # (B, L, H, K)
        o, S = rwkv7(r, w, k, v, -kk, kk * a, scale=1.0,
                     initial_state=None if state is None else state["recurrent"],
                     output_final_state=state is not None, impl=self.impl)  # (B, L, H, K)
        y = self._out(o, r, k, v, g)                                         # (B, L, D)
        return y, (None if state is None else {"shift": shift, "recurrent": S}), v_first

    def step(self, x_t, state, ctx=None, v_first=None):
        """x_t (B, D), v_first (B, D) or None -> (y_t (B, D), new_state, v_first (B, D))."""
        delta = state["shift"].to(x_t.dtype) - x_t                           # (B, D)
        r, w, k, v, a, g, kk, v_first = self._mix(x_t, delta, v_first)       # (B, H, K)
        o, S = rwkv7_step(r, w, k, v, -kk, kk * a, state["recurrent"], scale=1.0)   # (B, H, K)
        return self._out(o, r, k, v, g), {"shift": x_t, "recurrent": S}, v_first


class RWKV7ChannelMix(nn.Module):
    """RWKV-7 channel mixing (fla's RWKV7FeedForward), used as the FFN sub-block of rwkv layers.

    layer_idx / n_layers only shape the x_k init (fla's depth-dependent curve)."""

    def __init__(self, dim: int, mult=4, *, layer_idx: int = 0, n_layers: int = 1):
        super().__init__()
        self.dim, self.hidden = dim, cmix_hidden(dim, mult)
        if self.hidden <= 0:
            raise ValueError(f"RWKV7ChannelMix: dim * mult must be positive, got {dim} * {mult}")
        self.x_k = nn.Parameter(torch.zeros(dim))
        self.key = nn.Linear(dim, self.hidden, bias=False)
        self.value = nn.Linear(self.hidden, dim, bias=False)
        with torch.no_grad():
            r10 = 1.0 - layer_idx / n_layers
            ddd = torch.arange(dim, dtype=torch.float64) / dim
            self.x_k.copy_(1.0 - ddd ** (r10 ** 4))
            _orthogonal_(self.key.weight)
            self.value.weight.zero_()

    def init_state(self, batch_size: int, device=None, dtype=torch.float32) -> dict[str, torch.Tensor]:
        return {"shift": torch.zeros(batch_size, self.dim, device=device, dtype=dtype)}   # (B, D)

    def _ffn(self, x, delta):
        h = F.relu(self.key(torch.addcmul(x, delta, self.x_k)))               # (..., F)
        return self.value(h * h)                                               # (..., D)

    def forward(self, x, state=None, ctx=None):
        """x (B, L, D) -> (y (B, L, D), new_state or None)."""
        delta, shift = _token_shift(x, state)                                  # (B, L, D), (B, D)
        return self._ffn(x, delta), (None if state is None else {"shift": shift})

    def step(self, x_t, state, ctx=None):
        """x_t (B, D) -> (y_t (B, D), new_state)."""
        return self._ffn(x_t, state["shift"].to(x_t.dtype) - x_t), {"shift": x_t}


LAYER = RWKV7
OP = "rwkv7"  # the recurrence it runs (`describe --kernels`: hybridc_torch.plan)
