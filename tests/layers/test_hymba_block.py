"""Hymba's fused block (`fusion hymba`) and cross-layer KV sharing (attn `kv_reuse`), torch and JAX, against the
published computation: nvidia/Hymba-1.5B-Base's modeling_hymba.py `HymbaBlock` (not in transformers; its forward
needs mamba_ssm's CUDA kernels), transcribed here by hand with its own weight names: one in_proj -> q, k, v, x, z;
causal conv + SiLU on x; x_proj -> dt, B, C with RMSNorms (dt_layernorm, B_layernorm, C_layernorm); a sequential
selective scan gated by silu(z); attention over q, k, v (values E/H wide, RoPE, sliding window, GQA); a reusing
layer takes the producer's k, v; out_proj((pre_avg_layernorm1(attn) + pre_avg_layernorm2(ssm)) / 2)."""
import math

import pytest

torch = pytest.importorskip("torch")
jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import hybridc  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from hybridc_jax.layers import _hymba as jhymba  # noqa: E402
from hybridc_jax.layers.common import norm_apply, norm_init  # noqa: E402
from hybridc_torch.layers._hymba import HymbaMixer  # noqa: E402
from hybridc_torch.model import ir_spec  # noqa: E402

SRC = ("dim 24\nfusion hymba\nnorm rms\nmamba state=4 conv=3 dt_rank=5 inner_norm=weighted\n"
       "attn heads=4 kv_heads=2 head_dim=6 qk_norm=false rope=true rope_base=500 window={w}\n"
       "layers mamba|attn mamba|attn(kv_reuse=true)\n")


def _rms(x, w, eps=1e-6):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def _rope(x, pos, base):
    half = x.shape[-1] // 2
    inv = base ** (-torch.arange(half, dtype=torch.float32) / half)
    ang = pos[:, None].float() * inv[None]
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * ang.cos() - x2 * ang.sin(), x2 * ang.cos() + x1 * ang.sin()], -1)


def hymba_block(x, W, *, H, G, hd, E, N, R, window, base, kv_last=None):
    """modeling_hymba.py HymbaBlock.cuda_kernels_forward, by hand. W: Hymba's names. -> (out, (k, v))."""
    b, l, _ = x.shape
    ev = E // H
    proj = x @ W["in_proj.weight"].T
    latent, gate = proj[..., :-E], proj[..., -E:]
    if kv_last is None:
        q, k, v, hs = latent.split([H * hd, G * hd, G * ev, E], -1)
    else:
        q, hs = latent.split([H * hd, E], -1)
    pos = torch.arange(l)
    q = _rope(q.view(b, l, H, hd).transpose(1, 2), pos, base)
    if kv_last is None:
        k = _rope(k.view(b, l, G, hd).transpose(1, 2), pos, base)
        v = v.view(b, l, G, ev).transpose(1, 2)
    else:
        k, v = kv_last
    kk, vv = k.repeat_interleave(H // G, 1), v.repeat_interleave(H // G, 1)
    s = q @ kk.transpose(-1, -2) / math.sqrt(hd)
    i, j = pos[:, None], pos[None, :]
    mask = (j <= i) & ((i - j < window) if window else torch.ones_like(i - j, dtype=torch.bool))
    attn = (s.masked_fill(~mask, float("-inf")).softmax(-1) @ vv).transpose(1, 2).reshape(b, l, H * ev)
    # Mamba head: depthwise causal conv, SiLU, x_proj, inner norms, dt_proj, sequential scan, D skip, silu(z) gate
    K = W["conv1d.weight"].shape[-1]
    u = F.conv1d(F.pad(hs.transpose(1, 2), (K - 1, 0)), W["conv1d.weight"], W["conv1d.bias"], groups=E)
    u = F.silu(u).transpose(1, 2)  # (B, L, E)
    dt, Bm, Cm = (u @ W["x_proj.0.weight"].T).split([R, N, N], -1)
    dt, Bm, Cm = _rms(dt, W["dt_layernorm.weight"]), _rms(Bm, W["B_layernorm.weight"]), _rms(Cm, W["C_layernorm.weight"])
    dt = F.softplus(dt @ W["dt_proj.0.weight"].T + W["dt_proj.0.bias"])  # (B, L, E)
    A = -torch.exp(W["A_log.0"])
    h, ys = torch.zeros(b, E, N), []
    for t in range(l):
        h = torch.exp(dt[:, t, :, None] * A) * h + dt[:, t, :, None] * Bm[:, t, None, :] * u[:, t, :, None]
        ys.append((h * Cm[:, t, None, :]).sum(-1) + W["D.0"] * u[:, t])
    ssm = torch.stack(ys, 1) * F.silu(gate)
    mixed = (_rms(attn, W["pre_avg_layernorm1.weight"]) + _rms(ssm, W["pre_avg_layernorm2.weight"])) / 2
    return mixed @ W["out_proj.weight"].T, (k, v)


HYMBA_NAMES = {"in_proj.weight": "in_proj.weight", "out_proj.weight": "out_proj.weight",
               "conv1d.weight": "ssm.conv1d.weight", "conv1d.bias": "ssm.conv1d.bias",
               "x_proj.0.weight": "ssm.x_proj.weight", "dt_proj.0.weight": "ssm.dt_proj.weight",
               "dt_proj.0.bias": "ssm.dt_proj.bias", "A_log.0": "ssm.A_log", "D.0": "ssm.D",
               "dt_layernorm.weight": "ssm.dt_layernorm.weight", "B_layernorm.weight": "ssm.b_layernorm.weight",
               "C_layernorm.weight": "ssm.c_layernorm.weight", "pre_avg_layernorm1.weight": "norm_attn.weight",
               "pre_avg_layernorm2.weight": "norm_ssm.weight"}


def _blocks(window):
    m = hybridc.load(SRC.format(w=window or "none"))
    torch.manual_seed(0)
    blocks = [HymbaMixer(24, [ir_spec(s) for s in layer.mixers], lambda w: torch.nn.RMSNorm(w, eps=1e-6))
              for layer in m.layers]
    with torch.no_grad():
        for blk in blocks:
            for p in blk.parameters():
                p.add_(0.1 * torch.randn_like(p))   # norms and D away from their ones
    return m, blocks


@pytest.mark.parametrize("window", [None, 3], ids=["global", "window3"])
def test_matches_hymba_block_with_kv_reuse(window):
    m, blocks = _blocks(window)
    x = torch.randn(2, 7, 24)
    ctx = {"pos": 0, "meta": 0}
    with torch.no_grad():
        y0, _ = blocks[0](x, None, ctx)
        y1, _ = blocks[1](x, None, ctx)   # reads layer 1's keys/values from ctx
        dims = dict(H=4, G=2, hd=6, E=48, N=4, R=5, window=window, base=500.0)
        w0 = {h: blocks[0].state_dict()[o] for h, o in HYMBA_NAMES.items()}
        w1 = {h: blocks[1].state_dict()[o] for h, o in HYMBA_NAMES.items()}
        want0, kv = hymba_block(x, w0, **dims)
        want1, _ = hymba_block(x, w1, **dims, kv_last=kv)
    assert blocks[0].in_proj.weight.shape == (4 * 6 + 2 * 6 + 2 * 12 + 2 * 48, 24)
    assert blocks[1].in_proj.weight.shape == (4 * 6 + 2 * 48, 24)   # no k, v: the producer's
    torch.testing.assert_close(y0, want0, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(y1, want1, atol=1e-5, rtol=1e-5)


def test_jax_matches_torch_and_decodes():
    m, blocks = _blocks(3)
    specs = [[ir_spec(s) for s in layer.mixers] for layer in m.layers]
    params = [{k: jnp.asarray(v.numpy()) for k, v in blk.state_dict().items()} for blk in blocks]
    norm = lambda p, name, x: norm_apply(p, name, x, "rms")  # noqa: E731
    x = torch.randn(2, 6, 24)
    with torch.no_grad():
        ctx = {"pos": 0, "meta": 0}
        want = [blk(x, None, ctx)[0].numpy() for blk in blocks]
    jctx = {"pos": 0, "meta": 0, "meta_in_chunk": 0}
    got = [np.asarray(jhymba.apply(p, jnp.asarray(x.numpy()), s, norm, None, jctx)[0]) for p, s in zip(params, specs)]
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, atol=1e-5, rtol=1e-5)
    # decoding through the group's one cache equals the forward
    states = [jhymba.init_state(24, s, 2) for s in specs]
    outs = []
    for t in range(6):
        ctx = {"pos": t, "meta": 0, "meta_in_chunk": 0}
        row = []
        for i, (p, s) in enumerate(zip(params, specs)):
            y, states[i] = jhymba.step(p, jnp.asarray(x[:, t].numpy()), s, norm, states[i], ctx)
            row.append(np.asarray(y))
        outs.append(row)
    assert states[1]["attn"] == {} and states[0]["attn"]["v"].shape == (2, 2, 3, 12)
    for i in range(2):
        np.testing.assert_allclose(np.stack([o[i] for o in outs], 1), want[i], atol=1e-5, rtol=1e-5)
    assert norm_init("rms", 48)["weight"].shape == (48,)


@pytest.mark.parametrize("name", ["feat-hymba_fusion", "feat-kv_share"])
def test_state_bytes_equal_describe(name):
    """One KV cache per sharing group: the torch state after a prefill holds exactly describe's state bytes."""
    from programs import source

    from hybridc.summary import describe
    from hybridc_torch.model import HybridModel, state_bytes

    m = hybridc.load(source(name))
    net = HybridModel(m).eval()
    with torch.no_grad():
        _, st = net(torch.randn(1, 9, m.input), net.init_state(1))
    assert state_bytes(st) == describe(m, context=9)["state_bytes"]
    reusing = [i for i, l in enumerate(m.layers) if any(getattr(x, "kv_reuse", False) for x in l.mixers)]
    assert reusing and all(not _tensors(st["layers"][i]["mixer"].get("attn", st["layers"][i]["mixer"]))
                           for i in reusing)


def _tensors(state):
    return [v for v in state.values() if isinstance(v, torch.Tensor)] if isinstance(state, dict) else [state]
