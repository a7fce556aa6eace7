"""Mamba-2 mixer (SSD block with gated RMSNorm).

Paper: Dao & Gu, "Transformers are SSMs: Generalized Models and Efficient Algorithms Through Structured State Space
Duality" (ICML 2024), Sec. 7 (the Mamba-2 block). Reference implementation: mamba_ssm ``Mamba2``
(mamba_ssm/modules/mamba2.py; defaults D_has_hdim=False, dt_limit=(0, inf), no d_mlp part; its rmsnorm (`out_norm`),
norm_before_gate, bias and conv_bias switches and d_ssm (`inner`) are spec options) -- init order follows it;
parameter names match transformers' ``Mamba2Mixer`` (models/mamba2/modeling_mamba2.py) and ``FalconH1Mixer``
(models/falcon_h1, mamba_d_ssm / mamba_rms_norm), whose pure-torch paths we match numerically.

Glossary of dimension letters:
    B: batch    L: sequence length    D: model dim    E: inner dim (spec.inner)    H: heads (E / P)    P: head dim
    G: groups of B/C    N: state size    K: conv width    X: conv channels (E + 2 G N)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..ops import decode_step
from ..ops.causal_conv1d import causal_conv1d
from ..ops.rms_norm_gated import rms_norm_gated
from ..ops.ssd import OP as OP_ENTRY, ssd, ssd_step
from ._conv import causal_conv1d_step
from .mamba import init_dt_bias, recurrent_dtype

__all__ = ["Mamba2", "RMSNormGated", "LAYER", "OP"]

NORM_EPS = 1e-5  # mamba_ssm Mamba2 builds its RMSNormGated with eps=1e-5


class RMSNormGated(nn.Module):
    """Gated group RMSNorm, computed in fp32. norm_before_gate=False: weight * rmsnorm_groupwise(y * silu(z));
    True: weight * rmsnorm_groupwise(y) * silu(z) (mamba_ssm's RMSNormGated)."""

    def __init__(self, width: int, group_size: int, eps: float = NORM_EPS, norm_before_gate: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(width))
        self.group_size, self.eps, self.norm_before_gate = group_size, eps, norm_before_gate

    def forward(self, y, z):
        return rms_norm_gated(y, z, self.weight, self.group_size, self.eps, self.norm_before_gate)  # (..., E)


class Mamba2(nn.Module):
    """Mamba-2 mixer. spec: state (N), inner (E), heads (H), conv (K), head_dim (P), groups (G), chunk, out_norm,
    norm_before_gate, proj_bias, conv_bias, and the muP multipliers in_scale, out_scale, z/x/b/c/dt_scale (Falcon-H1:
    in_proj(x * in_scale) * mup_vector, out_proj(.) * out_scale)."""

    def __init__(self, dim: int, spec, *, impl: str = "auto"):
        super().__init__()
        self.dim, self.impl = dim, impl
        self.d_state, self.d_conv = int(spec.state), int(spec.conv)
        self.head_dim, self.n_groups, self.chunk_size = int(spec.head_dim), int(spec.groups), int(spec.chunk)
        self.d_inner, self.num_heads = int(spec.inner), int(spec.heads)
        self.dt_min, self.dt_max = float(getattr(spec, "dt_min", 0.0)), getattr(spec, "dt_max", None)  # dt clamp
        if self.d_inner != self.num_heads * self.head_dim or self.num_heads % self.n_groups:
            raise ValueError(f"mamba2: inner={self.d_inner} must be heads*head_dim={self.num_heads}*{self.head_dim}"
                             f", and the head count must be divisible by groups={self.n_groups}")
        E, H, GN, K = self.d_inner, self.num_heads, self.n_groups * self.d_state, self.d_conv
        self.conv_dim = E + 2 * GN
        # Construction order = mamba_ssm's Mamba2 (RNG stream): in_proj, conv1d, dt_bias, A_log, D, norm, out_proj.
        self.in_proj = nn.Linear(dim, 2 * E + 2 * GN + H, bias=bool(spec.proj_bias))  # [z, x, B, C, dt]
        self.conv1d = nn.Conv1d(self.conv_dim, self.conv_dim, kernel_size=K, groups=self.conv_dim,
                                padding=K - 1, bias=bool(spec.conv_bias))
        self.dt_bias = nn.Parameter(init_dt_bias(H))
        self.A_log = nn.Parameter(torch.log(torch.empty(H).uniform_(1.0, 16.0)))
        self.D = nn.Parameter(torch.ones(H))
        eps = getattr(spec, "norm_eps", None)  # the model's `norm eps=` (transformers' rms_norm_eps / layer_norm_epsilon)
        self.norm = (RMSNormGated(E, group_size=E // self.n_groups, eps=NORM_EPS if eps is None else eps,
                                  norm_before_gate=bool(spec.norm_before_gate))
                     if spec.out_norm else None)
        self.out_proj = nn.Linear(E, dim, bias=bool(spec.proj_bias))
        self.in_scale, self.out_scale = float(spec.in_scale), float(spec.out_scale)
        self.mup = tuple(float(getattr(spec, f"{n}_scale")) for n in ("z", "x", "b", "c", "dt"))

    def init_state(self, batch_size: int, device=None, dtype=torch.float32) -> dict[str, torch.Tensor]:
        return {
            "conv": torch.zeros(batch_size, self.conv_dim, self.d_conv - 1, device=device, dtype=dtype),  # (B, X, K-1)
            "ssm": torch.zeros(batch_size, self.num_heads, self.head_dim, self.d_state, device=device,
                               dtype=recurrent_dtype(dtype)),  # (B, H, P, N)
        }

    def _A(self) -> torch.Tensor:
        """A = -exp(A_log) (H,), computed in fp32 (fp64 for fp64 params)."""
        return -torch.exp(self.A_log.to(recurrent_dtype(self.A_log.dtype)))

    def _project(self, x):
        """in_proj(x * in_scale), each slice of [z, x, B, C, dt] times its muP multiplier (FalconH1Mixer's
        mup_vector) -> (..., 2E + 2GN + H)."""
        zxbcdt = self.in_proj(x * self.in_scale if self.in_scale != 1.0 else x)
        if all(v == 1.0 for v in self.mup):
            return zxbcdt
        GN = self.n_groups * self.d_state
        sizes = torch.tensor([self.d_inner, self.d_inner, GN, GN, self.num_heads], device=zxbcdt.device)
        return zxbcdt * torch.tensor(self.mup, dtype=zxbcdt.dtype, device=zxbcdt.device).repeat_interleave(sizes)

    def _split(self, zxbcdt):
        """(..., 2E + 2GN + H) -> z (..., E), xBC (..., X), dt (..., H)."""
        return zxbcdt.split([self.d_inner, self.conv_dim, self.num_heads], dim=-1)

    def _heads(self, xBC):
        """Post-conv (..., X) -> x (..., H, P), B (..., G, N), C (..., G, N)."""
        GN = self.n_groups * self.d_state
        x, B, C = xBC.split([self.d_inner, GN, GN], dim=-1)
        groups = (self.n_groups, self.d_state)
        return x.unflatten(-1, (self.num_heads, self.head_dim)), B.unflatten(-1, groups), C.unflatten(-1, groups)

    def _gated(self, y, z):
        """y (..., E), z (..., E) -> norm(y, z), or y * silu(z) without out_norm (..., E)."""
        if self.norm is not None:
            return self.norm(y, z)
        return rms_norm_gated(y, z, None, y.shape[-1], 0.0)  # the gate alone

    def _dt(self, dt):
        """(dt, dt_bias, softplus) for the op: raw dt (the op adds the bias and takes softplus), or, with dt_min /
        dt_max set, softplus(dt + dt_bias) clamped here (transformers' time_step_limit) and passed as it is."""
        if not self.dt_min and self.dt_max is None:
            return dt, self.dt_bias, True
        acc = recurrent_dtype(dt.dtype)
        d = F.softplus(dt.to(acc) + self.dt_bias.to(acc)).clamp(min=self.dt_min, max=self.dt_max)
        return d.to(dt.dtype), None, False

    def forward(self, x, state=None, ctx=None):
        z, xBC, dt = self._split(self._project(x))  # (B, L, E), (B, L, X), (B, L, H)
        conv_in = None if state is None else state["conv"]
        xBC, conv_state = causal_conv1d(xBC, self.conv1d.weight[:, 0], self.conv1d.bias, conv_in, "silu")  # (B, L, X)
        xs, B, C = self._heads(xBC)  # (B, L, H, P), (B, L, G, N), (B, L, G, N)
        dt, dt_bias, softplus = self._dt(dt)
        y, ssm_state = ssd(
            xs, dt, self._A(), B, C, self.chunk_size, D=self.D, dt_bias=dt_bias,
            initial_states=None if state is None else state["ssm"], dt_softplus=softplus,
            return_final_states=True, impl=self.impl,
        )  # (B, L, H, P), (B, H, P, N)
        out = self.out_proj(self._gated(y.flatten(-2), z).to(x.dtype))  # (B, L, D)
        out = out * self.out_scale if self.out_scale != 1.0 else out
        if state is None:
            return out, None
        return out, {"conv": conv_state.to(state["conv"].dtype), "ssm": ssm_state}

    def step(self, x_t, state, ctx=None):
        z, xBC, dt = self._split(self._project(x_t))  # (B, E), (B, X), (B, H)
        xBC, conv_state = causal_conv1d_step(xBC, self.conv1d.weight[:, 0], self.conv1d.bias, state["conv"])
        xs, B, C = self._heads(F.silu(xBC))  # (B, H, P), (B, G, N), (B, G, N)
        dt, dt_bias, softplus = self._dt(dt)
        y, ssm_state = ssd_step(state["ssm"], xs, dt, self._A(), B, C, D=self.D, dt_bias=dt_bias,
                                dt_softplus=softplus)  # (B, H, P), (B, H, P, N)
        out = self.out_proj(self._gated(y.flatten(-2), z).to(x_t.dtype)) * self.out_scale  # (B, D)
        return out, {"conv": conv_state.to(state["conv"].dtype), "ssm": ssm_state}

    def step_(self, x_t, state, ctx=None):
        """`step` writing the state in place (what `generate` runs): x_t (B, D) -> out (B, D). CPU fp32 runs the
        fused C++ step between in_proj and out_proj (ops/decode_step.py); elsewhere the pure step, copied back."""
        if not decode_step.usable(OP_ENTRY, self.impl, x_t):
            out, new = self.step(x_t, state, ctx)
            state.update(new)
            return out
        norm = self.norm
        inside = x_t.shape[0] <= decode_step.PROJ_MAX_BATCH and all(v == 1.0 for v in self.mup)  # GEMVs in the kernel
        if inside and self.in_scale != 1.0:
            x_t = x_t * self.in_scale
        y = decode_step.mamba2_step_(
            x_t if inside else self._project(x_t), state, self.conv1d.weight[:, 0].contiguous(), self.conv1d.bias,
            self.dt_bias, self.dt_min, float("inf") if self.dt_max is None else self.dt_max, self.A_log, self.D,
            self.num_heads, self.n_groups, None if norm is None else norm.weight,
            0 if norm is None else norm.group_size, 0.0 if norm is None else norm.eps,
            norm is not None and norm.norm_before_gate, (self.in_proj, self.out_proj) if inside else None)
        out = y if inside else self.out_proj(y)  # (B, D)
        return out * self.out_scale if self.out_scale != 1.0 else out


LAYER = Mamba2
OP = "ssd"  # the recurrence it runs (`describe --kernels`: hybridc_torch.plan)
