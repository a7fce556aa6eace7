"""Attention against published implementations: torch.nn.MultiheadAttention (plain causal MHA) and transformers'
Llama rotary embedding; GQA against repeated KV heads; the sliding-window mask against a direct loop."""
import math
from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")

from hybridc_torch.layers.attn import Attention, attention_mask, rope  # noqa: E402


def spec(**kw):
    base = dict(heads=4, head_dim=8, kv_heads=4, window=None, qk_norm=False, rope=False, rope_base=10000.0)
    return SimpleNamespace(kind="attn", **(base | kw))


def test_matches_torch_multihead_attention():
    torch.manual_seed(0)
    d = 32
    ours = Attention(d, spec())
    mha = torch.nn.MultiheadAttention(d, 4, bias=False, batch_first=True)
    with torch.no_grad():
        mha.in_proj_weight.copy_(torch.cat([ours.q_proj.weight, ours.k_proj.weight, ours.v_proj.weight]))
        mha.out_proj.weight.copy_(ours.o_proj.weight)
    x = torch.randn(2, 9, d)
    causal = torch.triu(torch.ones(9, 9, dtype=torch.bool), 1)
    want, _ = mha(x, x, x, attn_mask=causal, need_weights=False)
    got, _ = ours(x)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_rope_matches_transformers_llama():
    llama = pytest.importorskip("transformers.models.llama.modeling_llama")
    cfg = llama.LlamaConfig(hidden_size=32, num_attention_heads=2, head_dim=16, rope_theta=500.0,
                            max_position_embeddings=64)
    emb = llama.LlamaRotaryEmbedding(cfg)
    q, k = torch.randn(2, 2, 7, 16), torch.randn(2, 2, 7, 16)
    pos = torch.arange(3, 10)
    cos, sin = emb(q, pos[None])
    q_ref, k_ref = llama.apply_rotary_pos_emb(q, k, cos, sin)
    torch.testing.assert_close(rope(q, pos, 500.0), q_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(rope(k, pos, 500.0), k_ref, atol=1e-5, rtol=1e-5)


def test_gqa_equals_repeated_kv_heads():
    torch.manual_seed(0)
    d = 32
    gqa = Attention(d, spec(kv_heads=2))
    full = Attention(d, spec(kv_heads=4))
    with torch.no_grad():
        full.q_proj.weight.copy_(gqa.q_proj.weight)
        full.o_proj.weight.copy_(gqa.o_proj.weight)
        for name in ("k_proj", "v_proj"):
            w = getattr(gqa, name).weight.view(2, 8, d)
            getattr(full, name).weight.copy_(w.repeat_interleave(2, dim=0).reshape(32, d))
    x = torch.randn(2, 7, d)
    torch.testing.assert_close(gqa(x)[0], full(x)[0], atol=1e-5, rtol=1e-5)


def test_window_and_meta_mask_by_loop():
    q_pos, k_pos = torch.arange(10), torch.arange(10)
    m = attention_mask(q_pos, k_pos, n_meta=2, window=3)
    for i in range(10):
        for j in range(10):
            assert bool(m[i, j]) == (j <= i and (i - j < 3 or j < 2))


def test_qk_norm_rope_attention_by_hand():
    torch.manual_seed(1)
    d = 16
    layer = Attention(d, spec(heads=2, head_dim=8, kv_heads=1, qk_norm=True, rope=True, window=4))
    x = torch.randn(1, 6, d)
    got, _ = layer(x)
    q = layer.q_proj(x).view(1, 6, 2, 8).transpose(1, 2)
    k = layer.k_proj(x).view(1, 6, 1, 8).transpose(1, 2)
    v = layer.v_proj(x).view(1, 6, 1, 8).transpose(1, 2)
    rms = lambda t, w: t / torch.sqrt(t.pow(2).mean(-1, keepdim=True) + 1e-6) * w  # noqa: E731
    pos = torch.arange(6)
    q, k = rope(rms(q, layer.q_norm.weight), pos, 1e4), rope(rms(k, layer.k_norm.weight), pos, 1e4)
    s = (q @ k.transpose(-1, -2)) / math.sqrt(8)
    s = s.masked_fill(~attention_mask(pos, pos, 0, 4), float("-inf"))
    y = (s.softmax(-1) @ v).transpose(1, 2).reshape(1, 6, 16)
    torch.testing.assert_close(got, layer.o_proj(y), atol=1e-5, rtol=1e-5)
