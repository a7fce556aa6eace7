"""`attn` (causal attention: GQA, sliding window, QK-norm, (partial) RoPE, biases, output gate, soft-cap, meta tokens):
the torch layer against published implementations (torch.nn.MultiheadAttention for plain causal MHA with and without
biases, transformers' Llama rotary embedding, Qwen3-Next's partial rotary and its gated attention), GQA against
repeated KV heads, the sliding-window mask against a direct loop, QK-norm + RoPE and the soft-cap by hand; decoding
through the KV cache, the core's cost formulas against the module, and the JAX layer against the torch layer with
shared weights."""
import math
from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")

jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402

from _jax_parity import close  # noqa: E402
from hybridc.kinds import spec_class  # noqa: E402
from hybridc_jax.layers import attn as jattn  # noqa: E402
from hybridc_torch.layers.attn import Attention, attention_mask, partial_rope, rope  # noqa: E402


def spec(**kw):
    base = dict(heads=4, head_dim=8, kv_heads=4, window=None, qk_norm=False, rope=False, rope_base=10000.0,
                rope_fraction=1.0, qkv_bias=False, o_bias=False, gate=False, softcap=None, scale=None, in_scale=1.0,
                key_scale=1.0, out_scale=1.0, kv_reuse=False)
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


def test_biases_match_torch_multihead_attention():
    torch.manual_seed(0)
    d = 32
    ours = Attention(d, spec(qkv_bias=True, o_bias=True))
    mha = torch.nn.MultiheadAttention(d, 4, bias=True, batch_first=True)
    with torch.no_grad():
        mha.in_proj_weight.copy_(torch.cat([ours.q_proj.weight, ours.k_proj.weight, ours.v_proj.weight]))
        mha.in_proj_bias.copy_(torch.cat([ours.q_proj.bias, ours.k_proj.bias, ours.v_proj.bias]))
        mha.out_proj.weight.copy_(ours.o_proj.weight)
        mha.out_proj.bias.copy_(ours.o_proj.bias)
    x = torch.randn(2, 9, d)
    causal = torch.triu(torch.ones(9, 9, dtype=torch.bool), 1)
    want, _ = mha(x, x, x, attn_mask=causal, need_weights=False)
    torch.testing.assert_close(ours(x)[0], want, atol=1e-5, rtol=1e-5)


def _qwen3_next_config(**kw):
    qn = pytest.importorskip("transformers.models.qwen3_next.modeling_qwen3_next")
    cfg = qn.Qwen3NextConfig(hidden_size=32, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                             rope_parameters={"rope_type": "default", "rope_theta": 500.0, "partial_rotary_factor": 0.25},
                             max_position_embeddings=64, rms_norm_eps=1e-6, **kw)
    cfg._attn_implementation = "eager"
    return qn, cfg


def test_partial_rope_matches_transformers_qwen3_next():
    """Qwen3-Next (partial_rotary_factor 0.25): its rotary embedding and apply_rotary_pos_emb, head_dim 16 -> 4
    rotated channels, positions 3..9."""
    qn, cfg = _qwen3_next_config()
    emb = qn.Qwen3NextRotaryEmbedding(cfg)
    q, k = torch.randn(2, 4, 7, 16), torch.randn(2, 2, 7, 16)
    pos = torch.arange(3, 10)
    cos, sin = emb(q, pos[None])
    assert cos.shape[-1] == 4
    q_ref, k_ref = qn.apply_rotary_pos_emb(q, k, cos, sin)
    torch.testing.assert_close(partial_rope(q, pos, 500.0, 4), q_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(partial_rope(k, pos, 500.0, 4), k_ref, atol=1e-5, rtol=1e-5)


def test_gate_matches_transformers_qwen3_next_attention():
    """transformers' Qwen3NextAttention (gated, partial RoPE, GQA, q/k RMSNorm) with our weights, fp32, 1e-5.
    Its q/k norms are zero-centred, x_hat * (1 + w): ours, x_hat * w, map as w_theirs = w_ours - 1 (exact)."""
    qn, cfg = _qwen3_next_config(attention_bias=False)
    torch.manual_seed(0)
    ours = Attention(32, spec(heads=4, kv_heads=2, head_dim=16, qk_norm=True, rope=True, rope_base=500.0,
                              rope_fraction=0.25, gate=True))
    with torch.no_grad():
        ours.q_norm.weight.uniform_(0.5, 1.5)
        ours.k_norm.weight.uniform_(0.5, 1.5)
    ref = qn.Qwen3NextAttention(cfg, layer_idx=0).eval()
    sd = ours.state_dict()
    ref.load_state_dict({k: (v - 1 if k.endswith("norm.weight") else v) for k, v in sd.items()})
    x, pos = torch.randn(2, 9, 32), torch.arange(9)
    causal = torch.full((9, 9), float("-inf")).triu(1)[None, None]
    with torch.no_grad():
        want, _ = ref(x, qn.Qwen3NextRotaryEmbedding(cfg)(x, pos[None]), causal)
        got, _ = ours(x)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_softcap_by_hand_and_sdpa_without_it():
    """scores -> c*tanh(scores/c) before the masked softmax; a huge cap is the SDPA path."""
    torch.manual_seed(2)
    d = 16
    capped = Attention(d, spec(heads=2, head_dim=8, kv_heads=2, softcap=0.5, window=3))
    x = torch.randn(1, 6, d)
    q = capped.q_proj(x).view(1, 6, 2, 8).transpose(1, 2)
    k = capped.k_proj(x).view(1, 6, 2, 8).transpose(1, 2)
    v = capped.v_proj(x).view(1, 6, 2, 8).transpose(1, 2)
    pos = torch.arange(6)
    s = 0.5 * torch.tanh((q @ k.transpose(-1, -2)) / math.sqrt(8) / 0.5)
    s = s.masked_fill(~attention_mask(pos, pos, 0, 3), float("-inf"))
    y = (s.softmax(-1) @ v).transpose(1, 2).reshape(1, 6, 16)
    torch.testing.assert_close(capped(x)[0], capped.o_proj(y), atol=1e-5, rtol=1e-5)
    plain = Attention(d, spec(heads=2, head_dim=8, kv_heads=2, window=3))
    plain.load_state_dict(capped.state_dict())
    capped.spec = spec(heads=2, head_dim=8, kv_heads=2, softcap=1e6, window=3)
    torch.testing.assert_close(capped(x)[0], plain(x)[0], atol=1e-5, rtol=1e-5)


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


# ------------------------------------------------------------------------------ decoding, costs, the JAX layer
DIM, B, L = 32, 2, 9
SPECS = {
    "attn-H4-E8-global": spec(),
    "attn-H4-G2-E8-W4-qknorm-rope": spec(kv_heads=2, window=4, qk_norm=True, rope=True),
    "attn-H2-G1-E16-W3-rope": spec(heads=2, head_dim=16, kv_heads=1, window=3, rope=True, rope_base=500.0),
    "attn-H4-G2-E8-global-gate-bias-rope0.5-cap": spec(kv_heads=2, qk_norm=True, rope=True, rope_fraction=0.5,
                                                       qkv_bias=True, o_bias=True, gate=True, softcap=2.0),
    "attn-H2-G1-E16-W3-gate-obias-rope0.25-cap": spec(heads=2, head_dim=16, kv_heads=1, window=3, rope=True,
                                                      rope_fraction=0.25, o_bias=True, gate=True, softcap=1.5),
}


def make(spec_id):
    torch.manual_seed(0)
    return Attention(DIM, SPECS[spec_id])


def rand_x(length=L, seed=1):
    return torch.randn(B, length, DIM, generator=torch.Generator().manual_seed(seed))


def torch_decode(layer, x, L1, max_len=L):
    """Prefill x[:, :L1] into the KV cache, then step the rest (max_len: the global cache's slots, None: growing).
    Returns (y (B, L, D), final state)."""
    y0, state = layer(x[:, :L1], layer.init_state(B), {"pos": 0, "max_len": max_len})
    ys = [y0]
    for t in range(L1, x.shape[1]):
        y_t, state = layer.step(x[:, t], state, {"pos": t, "max_len": max_len})
        ys.append(y_t[:, None])
    return torch.cat(ys, dim=1), state


@pytest.mark.parametrize("L1", [1, 5], ids=lambda n: f"prefill{n}")
@pytest.mark.parametrize("spec_id", list(SPECS))
def test_decoding_equals_forward_and_caps_the_cache(spec_id, L1):
    layer, x = make(spec_id), rand_x()
    with torch.no_grad():
        y_dec, state = torch_decode(layer, x, L1)
        y_full, _ = layer(x)
    torch.testing.assert_close(y_dec, y_full, atol=1e-5, rtol=1e-5)
    window = SPECS[spec_id].window
    assert state["k"].shape[2] == state["v"].shape[2] == (L if window is None else min(L, window))


@pytest.mark.parametrize("spec_id", list(SPECS))
def test_growing_cache_doubles_and_decodes(spec_id):
    """Without max_len the cache grows by doubling (a window's up to its ring of `window` slots) and decodes alike;
    a one-token step writes in place: the buffers keep their storage between doublings."""
    layer, x = make(spec_id), rand_x()
    with torch.no_grad():
        y_dec, state = torch_decode(layer, x, 1, max_len=None)
        y_full, _ = layer(x)
        window = SPECS[spec_id].window
        assert state["k"].shape[2] == (16 if window is None else window)  # 1, 2, 4, 8, 16 slots for 9 positions
        ptr = state["k"].data_ptr()
        _, state = layer.step(x[:, 0], state, {"pos": L})
        assert state["k"].data_ptr() == ptr
    torch.testing.assert_close(y_dec, y_full, atol=1e-5, rtol=1e-5)


def test_decoding_past_max_len_is_an_error():
    layer, x = make("attn-H4-E8-global"), rand_x()
    with torch.no_grad(), pytest.raises(ValueError, match=r"position 4 is past max_len=4.*init_state"):
        torch_decode(layer, x[:, :5], 2, max_len=4)


@pytest.mark.parametrize("spec_id", list(SPECS))
def test_costs_match_module(spec_id):
    """Parameters; the KV cache after `context` steps; >= one multiply-add per weight and token."""
    layer, core = make(spec_id), spec_class("attn")(**vars(SPECS[spec_id]))
    assert core.params(DIM) == sum(p.numel() for p in layer.parameters())
    for context in (1, 3, L):
        with torch.no_grad():
            _, state = layer(rand_x(context)[:1], layer.init_state(1), {"pos": 0})
        assert core.state_numel(DIM, context=context) == sum(t.numel() for t in state.values())
    matmul_params = sum(p.numel() for p in layer.parameters() if p.dim() == 2)
    assert isinstance(core.flops(DIM), int) and core.flops(DIM) >= 2 * matmul_params


@pytest.mark.parametrize("spec_id", list(SPECS))
def test_jax_init_has_torch_keys_and_shapes(spec_id):
    params = jax.eval_shape(lambda key: jattn.init(DIM, SPECS[spec_id], key=key), jax.random.PRNGKey(0))
    sd = make(spec_id).state_dict()
    assert params.keys() == sd.keys()
    assert all(params[k].shape == tuple(v.shape) and params[k].dtype == jnp.float32 for k, v in sd.items())


@pytest.mark.parametrize("spec_id", list(SPECS))
def test_jax_forward_and_gradients_match_torch(spec_id):
    """Stateless forward, and d(sum(y * w))/d(every parameter, x): torch autograd vs jax.grad, 1e-4 relative."""
    layer, spec = make(spec_id), SPECS[spec_id]
    params = {k: jnp.asarray(v.detach().numpy()) for k, v in layer.state_dict().items()}
    x, w = rand_x(), rand_x(seed=2)
    tx = x.clone().requires_grad_(True)
    t_y, _ = layer(tx)
    (t_y * w).sum().backward()

    def loss(p, xx):
        y = jattn.apply(p, xx, spec)[0]  # (B, L, D)
        return jnp.sum(y * jnp.asarray(w.numpy())), y

    (g_p, g_x), j_y = jax.jit(jax.grad(loss, argnums=(0, 1), has_aux=True))(params, jnp.asarray(x.numpy()))
    close(j_y, t_y.detach().numpy())
    assert g_p.keys() == dict(layer.named_parameters()).keys()
    for name, p in layer.named_parameters():
        close(g_p[name], p.grad.numpy())
    close(g_x, tx.grad.numpy())


@pytest.mark.parametrize("spec_id", list(SPECS))
def test_jax_decoding_matches_torch(spec_id):
    """Jitted prefill into the fixed-size JAX cache (a ring of `window` slots, or `max_len`), then jitted steps (traced
    position), equal torch's forward."""
    layer, spec = make(spec_id), SPECS[spec_id]
    params = {k: jnp.asarray(v.detach().numpy()) for k, v in layer.state_dict().items()}
    x = rand_x()
    with torch.no_grad():
        t_full, _ = layer(x)
    xj = jnp.asarray(x.numpy())
    apply = jax.jit(lambda p, xx, s: jattn.apply(p, xx, spec, s, {"pos": 0}))
    step = jax.jit(lambda p, x_t, s, pos: jattn.step(p, x_t, spec, s, {"pos": pos}))
    y, state = apply(params, xj[:, :4], jattn.init_state(DIM, spec, B, max_len=L))
    ys = [y]
    for t in range(4, L):
        y_t, state = step(params, xj[:, t], state, jnp.int32(t))
        ys.append(y_t[:, None])
    close(jnp.concatenate(ys, axis=1), t_full.numpy())
