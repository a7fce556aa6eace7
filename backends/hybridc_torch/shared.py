"""Call sites of shared blocks with `share` options (hybridc/sharing.py; Zamba2, Glorioso et al. 2024,
arXiv:2411.15242, transformers' Zamba2HybridLayer / Zamba2AttentionDecoderLayer).

A `SharedSite` sits at a layer position. Its `norm`, `mixer`, `ffn_norm`, `ffn` are the modules of its shared block
(the same objects at every site of that block, so torch names them once, at the block's first site); its own
tensors are the rank-R adapters `lora.<proj>.a` (R, in), `lora.<proj>.b` (out, R) and, with into=next, `linear`
(D, D). An adapter adds `b(a(x))` to a projection's output, as Zamba2's adapter lists; it is passed to the shared
module as a per-token bias of that projection (`torch.func.functional_call`), so the layer's own math is untouched.

Dataflow, in = x or concat(x, e) (B, L, 2D) with e the embedded input (ctx["embed"]):
- into=residual: x = x + drop(mixer(norm(in))); x = x + drop(ffn(ffn_norm(x))) (as `Block`);
- into=next (Zamba2): t = linear(ffn(ffn_norm(mixer(norm(in))))), no residuals; x passes unchanged and t is left in
  ctx["into_next"] for the next block, which adds it to its input before its norm only (`Block.forward`).
Decoding: each site keeps its own state (the shared attention's KV cache per call site, as Zamba2's per-layer cache).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call

from hybridc.sharing import adapter_shapes, in_width


def _unbatched(biases: dict) -> dict:
    """Per-token biases (B, ..., out) of a batch of one without its batch axis: F.linear folds a contiguous (1, L, in)
    input to (L, in) and then needs a bias broadcastable to (L, out) (a (1, L, out) one raises)."""
    return {k: v[0] if v.shape[0] == 1 else v for k, v in biases.items()}


def build_block(make_norm, make_mixer, make_ffn, mixer_spec, ffn_spec, site, *, dim: int, norm: str,
                impl: str) -> dict:
    """The shared modules of one block: the norm and mixer read D (2D with input=concat); the mixer writes D."""
    width = in_width(site, dim)
    mods = {"norm": make_norm(norm, width), "mixer": make_mixer(mixer_spec, width, impl)}
    if width != dim:  # attention over 2D: o_proj (D, H*E)
        o = mods["mixer"].o_proj
        mods["mixer"].o_proj = nn.Linear(o.in_features, dim, bias=o.bias is not None)
    if ffn_spec is not None:
        mods["ffn_norm"], mods["ffn"] = make_norm(norm, dim), make_ffn(ffn_spec, dim, impl)
    return mods


def block_state(blk, batch_size: int, device=None, dtype=torch.float32) -> dict:
    """A block's (or call site's) zero decoding state: its mixer's, and its FFN's when it has one."""
    st = {"mixer": blk.mixer.init_state(batch_size, device, dtype)}
    if blk.has_ffn:
        st["ffn"] = blk.ffn.init_state(batch_size, device, dtype)
    return st


class Adapter(nn.Module):
    """b(a(x)): a (R, in), b (out, R), no biases (Zamba2's nn.Sequential of two bias-free Linears)."""

    def __init__(self, d_in: int, rank: int, d_out: int):
        super().__init__()
        self.a = nn.Linear(d_in, rank, bias=False)
        self.b = nn.Linear(rank, d_out, bias=False)

    def forward(self, x):
        return self.b(self.a(x))


class SharedSite(nn.Module):
    """One call site: the shared block's modules, this site's adapters and linear."""

    def __init__(self, modules: dict, layer, *, dim: int, dropout: float = 0.0, residual_scale: float = 1.0):
        super().__init__()
        for name, mod in modules.items():
            setattr(self, name, mod)
        self.site, self.has_ffn = layer.site, "ffn" in modules
        self.residual_scale = residual_scale
        shapes = adapter_shapes(layer, dim)
        lora = {}
        for key, (out, inp) in shapes.items():
            if key.startswith("lora.") and key.endswith(".a.weight"):
                proj = key.split(".")[1]
                lora[proj] = Adapter(inp, out, shapes[f"lora.{proj}.b.weight"][0])
        if lora:
            self.lora = nn.ModuleDict(lora)
        if "linear.weight" in shapes:
            self.linear = nn.Linear(dim, dim, bias=False)
        self.drop = nn.Dropout(dropout)

    def init_state(self, batch_size: int, device=None, dtype=torch.float32) -> dict:
        return block_state(self, batch_size, device, dtype)

    def _biases(self, module, x, projs) -> dict:
        """{proj.bias: its bias (if any) + this site's adapter of x} for the adapted projections of `module`."""
        out = {}
        for proj in projs:
            if proj in getattr(self, "lora", {}):
                base = getattr(module, proj).bias
                delta = self.lora[proj](x)  # (..., out)
                out[f"{proj}.bias"] = delta if base is None else delta + base
        return out

    def _mixer(self, xn, state, ctx, step: bool):
        """The shared mixer on the normed input, with this site's q/k/v adapters (attn: step = forward of one step)."""
        biases = self._biases(self.mixer, xn, ("q_proj", "k_proj", "v_proj"))
        if not biases:
            fn = self.mixer.step if step else self.mixer
            if getattr(self.mixer, "carries_v_first", False):  # RWKV-7's value residual (model.run_mixer)
                y, new, self._v_first = fn(xn, state, ctx, self._v_first)
                return y, new
            return fn(xn, state, ctx)
        if step:
            y, new = functional_call(self.mixer, _unbatched({k: v[:, None] for k, v in biases.items()}),
                                     (xn[:, None], state, ctx))
            return y[:, 0], new
        return functional_call(self.mixer, _unbatched(biases), (xn, state, ctx))

    def _ffn(self, h, state, ctx, step: bool):
        biases = self._biases(self.ffn, h, ())
        if "ffn" in getattr(self, "lora", {}):  # one adapter onto gate and up together ([gate; up]), or up alone
            delta = self.lora["ffn"](h)  # (..., 2F) or (..., F)
            names = ("gate", "up") if getattr(self.ffn, "gated", False) else ("up",)
            for name, part in zip(names, delta.chunk(len(names), dim=-1)):
                base = getattr(self.ffn, name).bias
                biases[f"{name}.bias"] = part if base is None else part + base
        if not biases:
            return (self.ffn.step if step else self.ffn)(h, state, ctx)
        return functional_call(self.ffn, _unbatched(biases), (h, state, ctx))

    def _run(self, x, state, ctx, step: bool):
        ctx = {} if ctx is None else ctx
        inp = torch.cat([x, ctx["embed"]], dim=-1) if self.site.input == "concat" else x  # (.., D or 2D)
        y, sm = self._mixer(self.norm(inp), None if state is None else state["mixer"], ctx, step)
        new = None if state is None else {"mixer": sm}
        if self.site.into == "next":
            if self.has_ffn:
                y, sf = self._ffn(self.ffn_norm(y), None if state is None else state["ffn"], ctx, step)
                new = new if new is None else {**new, "ffn": sf}
            ctx["into_next"] = self.drop(self.linear(y))  # enters the next block's input before its norm
            return x, new
        x = x + self.residual_scale * self.drop(y)
        if self.has_ffn:
            y, sf = self._ffn(self.ffn_norm(x), None if state is None else state["ffn"], ctx, step)
            x = x + self.residual_scale * self.drop(y)
            new = new if new is None else {**new, "ffn": sf}
        return x, new

    def forward(self, x, state=None, ctx=None, v_first=None):
        """x (B, L, D) -> (x (B, L, D), new_state or None, v_first)."""
        self._v_first = v_first
        x, new = self._run(x, state, ctx, step=False)
        return x, new, self._v_first

    def step(self, x_t, state, ctx=None, v_first=None):
        """x_t (B, D) -> (x_t (B, D), new_state, v_first)."""
        self._v_first = v_first
        x_t, new = self._run(x_t, state, ctx, step=True)
        return x_t, new, self._v_first


def fed(x, ctx):
    """The next block's norm input: x plus what a preceding into=next site left in ctx (taken once), or x."""
    t = ctx.pop("into_next", None) if ctx else None
    return x if t is None else x + t
