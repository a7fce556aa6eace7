"""Mamba-1 mixer (selective SSM block).

Paper: Gu & Dao, "Mamba: Linear-Time Sequence Modeling with Selective State Spaces" (2023), Fig. 3 / Sec. 3.4.
Reference implementation: mamba_ssm ``Mamba`` (mamba_ssm/modules/mamba_simple.py) -- parameter names, shapes and
init order follow it -- and transformers' ``MambaMixer`` (models/mamba/modeling_mamba.py), whose pure-torch path we
match numerically.
Options: biases on in_proj/out_proj (``proj_bias``, transformers' ``use_bias``) and on the conv (``conv_bias``,
``use_conv_bias``); an explicit inner width (``inner``, Falcon-H1's 1.5 * D); RMSNorms on dt, B and C after x_proj
(``inner_norm``): ``weighted`` as transformers' ``JambaMambaMixer`` (``dt_layernorm``, ``b_layernorm``,
``c_layernorm``), ``plain`` as ``FalconMambaMixer`` (weightless, ``mixer_rms_eps``); several heads (``heads``) as
transformers' ``ZambaMambaMixer`` (Zamba-7B): per-head ``x_proj_weight`` (H, R+2N, P), ``dt_proj_weight`` (H, P, R),
``dt_proj_bias``, ``A_log``, ``D`` split by head, and its in_proj layout (x and z interleaved channel by channel).
The scan is per channel either way; per-head B and C run as the kernels' B/C groups (G = H).

Glossary of dimension letters:
    B: batch    L: sequence length    D: model dim    E: inner dim (inner, else expand * D)    N: state size
    R: dt_rank    K: conv width    C: conv channels    H: heads    P: head width E / H
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..ops import decode_step
from ..ops.selective_scan import OP as OP_ENTRY, selective_scan, selective_scan_step
from ._conv import causal_conv1d, causal_conv1d_step

__all__ = ["Mamba", "inner_width", "init_dt_bias", "recurrent_dtype", "LAYER", "OP"]


def recurrent_dtype(dtype: torch.dtype) -> torch.dtype:
    """dtype of recurrent states: fp32, or fp64 for fp64 models (the kernels accumulate in the same)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def init_dt_bias(n: int, dt_min=1e-3, dt_max=0.1, dt_floor=1e-4) -> torch.Tensor:
    """mamba_ssm dt init: dt log-uniform in [dt_min, dt_max], floored, returned as inverse-softplus(dt) (n,)."""
    dt = torch.exp(torch.rand(n) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
    dt = dt.clamp(min=dt_floor)
    return dt + torch.log(-torch.expm1(-dt))


def inner_width(dim: int, spec) -> int:
    """E: spec.inner when given, else int(expand * dim)."""
    return int(spec.inner) if spec.inner is not None else int(spec.expand * dim)


class Mamba(nn.Module):
    """Mamba-1 mixer. spec: state (N), expand, inner (E or None), conv (K), dt_rank (R), proj_bias, conv_bias,
    inner_norm (none | weighted | plain), eps, heads (H)."""

    def __init__(self, dim: int, spec, *, impl: str = "auto"):
        super().__init__()
        self.dim, self.impl = dim, impl
        self.d_state, self.d_conv, self.dt_rank = int(spec.state), int(spec.conv), int(spec.dt_rank)
        self.d_inner = inner_width(dim, spec)
        self.heads = int(spec.heads)
        E, N, R, K, H = self.d_inner, self.d_state, self.dt_rank, self.d_conv, self.heads
        # Construction and init order follow mamba_ssm (same RNG draw order).
        self.in_proj = nn.Linear(dim, 2 * E, bias=spec.proj_bias)
        self.conv1d = nn.Conv1d(E, E, kernel_size=K, groups=E, padding=K - 1, bias=spec.conv_bias)
        if H == 1:
            self.x_proj = nn.Linear(E, R + 2 * N, bias=False)
            self.dt_proj = nn.Linear(R, E, bias=True)
            with torch.no_grad():
                nn.init.uniform_(self.dt_proj.weight, -R ** -0.5, R ** -0.5)
                self.dt_proj.bias.copy_(init_dt_bias(E))
        else:  # ZambaMambaMixer's per-head projections; the same init per head as the single-head layer's
            P = E // H
            self.x_proj_weight = nn.Parameter(torch.empty(H, R + 2 * N, P).uniform_(-P ** -0.5, P ** -0.5))
            self.dt_proj_weight = nn.Parameter(torch.empty(H, P, R).uniform_(-R ** -0.5, R ** -0.5))
            self.dt_proj_bias = nn.Parameter(init_dt_bias(E).view(H, P))
        A = torch.arange(1, N + 1, dtype=torch.float32).repeat(E, 1)  # (E, N), S4D-real
        self.A_log = nn.Parameter(torch.log(A) if H == 1 else torch.log(A).view(H, E // H, N))  # (E, N) | (H, P, N)
        self.D = nn.Parameter(torch.ones(E) if H == 1 else torch.ones(H, E // H))  # (E,) | (H, P)
        self.out_proj = nn.Linear(E, dim, bias=spec.proj_bias)
        self.inner_norm = spec.inner_norm
        if spec.inner_norm != "none":  # Jamba's names; plain: no weights (FalconMamba)
            affine = spec.inner_norm == "weighted"
            self.dt_layernorm = nn.RMSNorm(R, eps=spec.eps, elementwise_affine=affine)
            self.b_layernorm = nn.RMSNorm(N, eps=spec.eps, elementwise_affine=affine)
            self.c_layernorm = nn.RMSNorm(N, eps=spec.eps, elementwise_affine=affine)

    def init_state(self, batch_size: int, device=None, dtype=torch.float32) -> dict[str, torch.Tensor]:
        E = self.d_inner
        return {
            "conv": torch.zeros(batch_size, E, self.d_conv - 1, device=device, dtype=dtype),  # (B, E, K-1)
            "ssm": torch.zeros(batch_size, E, self.d_state, device=device, dtype=recurrent_dtype(dtype)),  # (B, E, N)
        }

    def _A(self) -> torch.Tensor:
        """A = -exp(A_log) (E, N), computed in fp32 (fp64 for fp64 params)."""
        return -torch.exp(self.A_log.to(recurrent_dtype(self.A_log.dtype))).reshape(self.d_inner, self.d_state)

    def _D_and_dt_bias(self):
        """D (E,) and the dt bias (E,), heads flattened into channels."""
        bias = self.dt_proj.bias if self.heads == 1 else self.dt_proj_bias.reshape(-1)
        return self.D.reshape(-1), bias

    def _split_in(self, xz: torch.Tensor):
        """in_proj output (..., 2E) -> x, z (..., E): halves, or (heads > 1) Zamba's channel-interleaved pairs."""
        return xz.chunk(2, dim=-1) if self.heads == 1 else xz.unflatten(-1, (self.d_inner, 2)).unbind(-1)

    def _ssm_inputs(self, xc: torch.Tensor):
        """xc (..., E) post-conv activations -> dt (..., E) (before bias), B and C (..., N), or (..., H, N) per head."""
        sizes = [self.dt_rank, self.d_state, self.d_state]
        if self.heads == 1:
            dt, B, C = self.x_proj(xc).split(sizes, dim=-1)
        else:  # per head: x_proj_weight[h] @ x_h
            xh = xc.unflatten(-1, (self.heads, -1))  # (..., H, P)
            dt, B, C = torch.einsum("...hp,hkp->...hk", xh, self.x_proj_weight).split(sizes, dim=-1)  # (..., H, *)
        if self.inner_norm != "none":
            dt, B, C = self.dt_layernorm(dt), self.b_layernorm(B), self.c_layernorm(C)
        if self.heads == 1:
            return F.linear(dt, self.dt_proj.weight), B, C
        return torch.einsum("...hr,hpr->...hp", dt, self.dt_proj_weight).flatten(-2), B, C  # (..., E)

    def forward(self, x, state=None, ctx=None):
        xi, z = self._split_in(self.in_proj(x))  # (B, L, E) each
        conv_in = None if state is None else state["conv"]
        xc, conv_state = causal_conv1d(xi.transpose(1, 2), self.conv1d.weight[:, 0], self.conv1d.bias, conv_in)
        xc = F.silu(xc)  # (B, E, L)
        dt, B, C = self._ssm_inputs(xc.transpose(1, 2))  # (B, L, E), (B, L, [H,] N) twice
        D, dt_bias = self._D_and_dt_bias()
        y, ssm_state = selective_scan(
            xc, dt.transpose(1, 2), self._A(), B.movedim(1, -1), C.movedim(1, -1),  # B, C (B, [H,] N, L)
            D=D, z=z.transpose(1, 2), delta_bias=dt_bias, delta_softplus=True,
            return_last_state=True, initial_state=None if state is None else state["ssm"], impl=self.impl,
        )  # (B, E, L), (B, E, N)
        out = self.out_proj(y.transpose(1, 2).to(x.dtype))  # (B, L, D)
        if state is None:
            return out, None
        return out, {"conv": conv_state.to(state["conv"].dtype), "ssm": ssm_state}

    def step(self, x_t, state, ctx=None):
        xi, z = self._split_in(self.in_proj(x_t))  # (B, E) each
        xc, conv_state = causal_conv1d_step(xi, self.conv1d.weight[:, 0], self.conv1d.bias, state["conv"])
        xc = F.silu(xc)  # (B, E)
        dt, B, C = self._ssm_inputs(xc)  # (B, E), (B, [H,] N) twice
        D, dt_bias = self._D_and_dt_bias()
        y, ssm_state = selective_scan_step(
            state["ssm"], xc, dt, self._A(), B, C, D=D, z_t=z,
            delta_bias=dt_bias, delta_softplus=True,
        )  # (B, E), (B, E, N)
        out = self.out_proj(y.to(x_t.dtype))  # (B, D)
        return out, {"conv": conv_state.to(state["conv"].dtype), "ssm": ssm_state}

    def step_(self, x_t, state, ctx=None):
        """`step` writing the state in place (what `generate` runs): x_t (B, D) -> out (B, D). CPU fp32 runs the
        fused C++ step between in_proj and out_proj (ops/decode_step.py); elsewhere the pure step, copied back."""
        if self.heads != 1 or not decode_step.usable(OP_ENTRY, self.impl, x_t):
            out, new = self.step(x_t, state, ctx)
            state.update(new)
            return out
        conv_w, A, dt_proj_t = self._step_consts()
        norms, eps = None, None
        if self.inner_norm != "none":  # nn.RMSNorm: weight None when weightless, eps None for the dtype's
            norms = (self.dt_layernorm.weight, self.b_layernorm.weight, self.c_layernorm.weight)
            eps = self.dt_layernorm.eps
        inside = x_t.shape[0] <= decode_step.PROJ_MAX_BATCH  # the projections as GEMVs in the kernel
        y = decode_step.mamba_step_(
            x_t if inside else self.in_proj(x_t), state, conv_w, self.conv1d.bias, self.x_proj.weight, dt_proj_t,
            self.dt_proj.bias, A, self.D, norms, torch.finfo(torch.float32).eps if eps is None else eps,
            (self.in_proj, self.out_proj) if inside else None)  # (B, D) inside, else (B, E)
        return y if inside else self.out_proj(y)  # (B, D)

    def _step_consts(self):
        """(conv weight (E, K), A (E, N), dt_proj's weight transposed (R, E)) for the fused step, contiguous;
        recomputed when a parameter changes (its storage or its version: optimiser steps, load_state_dict)."""
        params = (self.conv1d.weight, self.A_log, self.dt_proj.weight)
        key = tuple((p.data_ptr(), p._version) for p in params)
        cached = self.__dict__.get("_step_cache")
        if cached is None or cached[0] != key:
            with torch.no_grad():
                cached = (key, (self.conv1d.weight[:, 0].contiguous(), self._A().contiguous(),
                                self.dt_proj.weight.t().contiguous()))
            self.__dict__["_step_cache"] = cached
        return cached[1]


LAYER = Mamba
OP = "selective_scan"  # the recurrence it runs (`describe --kernels`: hybridc_torch.plan)
