"""JAX causal attention (hybridc_jax/ops/attention): the blockwise form and jax.nn.dot_product_attention against the
dense masked reference, values and gradients (of a fixed random linear functional of the output), over odd lengths,
lengths not a multiple of the blocks, windows smaller and larger than the length, GQA and the soft-cap.

Dimension glossary: B batch, H query heads, G kv heads, L length, E head dim.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hybridc_jax.ops import OPS
from hybridc_jax.ops.attention import attention, block, naive

B, E = 2, 8
# (L, H, G, window, softcap): each length once with GQA, a window below and above the length, a soft-cap
CASES = [(1, 2, 1, None, None), (7, 4, 2, 3, None), (33, 2, 2, None, 20.0), (100, 4, 1, 17, None),
         (100, 4, 4, 250, 5.0), (257, 4, 2, None, None), (257, 2, 1, 64, 30.0)]
BLOCKS = [8, 16, 40]  # the longest block: none divides the lengths (block_size evens them out, multiples of 8)


def case_id(case) -> str:
    length, h, g, window, softcap = case
    return f"L{length}-H{h}-G{g}-w{window or 'all'}-cap{softcap or 'none'}"


def inputs(length, h, g, seed=0):
    rng = np.random.default_rng(seed)
    draw = lambda *s: jnp.asarray(rng.standard_normal(s).astype(np.float32))
    return draw(B, h, length, E), draw(B, g, length, E), draw(B, g, length, E), draw(B, h, length, E)


def value_and_grads(fn, q, k, v, w):
    """(y, (dq, dk, dv)) of sum(fn(q, k, v) * w), jitted."""
    loss = lambda q, k, v: jnp.sum(fn(q, k, v) * w)
    return jax.jit(fn)(q, k, v), jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(q, k, v)


def assert_matches_reference(fn, case):
    length, h, g, window, softcap = case
    q, k, v, w = inputs(length, h, g)
    ref = lambda q, k, v: naive.reference(q, k, v, 0.3, softcap, window)
    y, grads = value_and_grads(fn, q, k, v, w)
    y_ref, grads_ref = value_and_grads(ref, q, k, v, w)
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
    for name, a, e in zip("qkv", grads, grads_ref):
        np.testing.assert_allclose(a, e, rtol=1e-5, atol=1e-5, err_msg=f"d{name}")


@pytest.mark.parametrize("blk", BLOCKS, ids=lambda b: f"block{b}")
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_block_matches_reference(case, blk):
    _, _, _, window, softcap = case
    assert_matches_reference(lambda q, k, v: block.block_attention(q, k, v, 0.3, softcap, window, block=blk), case)


@pytest.mark.parametrize("impl", ["block", "xla"])
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_entry_point_matches_reference(case, impl):
    """The default blocks (one block below 256 tokens), and jax.nn.dot_product_attention (the soft-cap falls back)."""
    _, _, _, window, softcap = case
    assert_matches_reference(lambda q, k, v: attention(q, k, v, 0.3, softcap, window, impl=impl), case)


@pytest.mark.parametrize("length,blk,window", [(100, 16, None), (100, 24, 17), (257, 40, 64), (40, 8, 1),
                                              (40, 16, 300), (33, 8, 8)])
def test_block_ranges_cover_exactly_the_visible_keys(length, blk, window):
    """Query block i computes key blocks key_blocks(i), and key block j's gradient the query blocks query_blocks(j):
    the same pairs, covering every visible (query, key) pair, and none wholly invisible."""
    t = block.block_size(length, blk)
    n = -(-length // t)
    visible = np.asarray(naive.causal_mask(n * t, window))
    fwd = {(i, j) for i in range(n) for j in range(*map(int, block.key_blocks(i, t, window)))}
    bwd = {(i, j) for j in range(n) for i in range(*map(int, block.query_blocks(j, n, t, window)))}
    needed = {(i, j) for i in range(n) for j in range(n) if visible[i * t:(i + 1) * t, j * t:(j + 1) * t].any()}
    assert fwd == bwd == needed


def test_large_scores_at_a_ragged_length():
    """Scores in the hundreds (exp overflows fp32 without the running max) at a length that pads the last block:
    finite values and gradients equal to the reference's."""
    q, k, v, w = inputs(45, 2, 1, seed=2)
    fn = lambda q, k, v: block.block_attention(q * 10, k * 10, v, 0.3, None, None, block=16)
    ref = lambda q, k, v: naive.reference(q * 10, k * 10, v, 0.3)
    (y, grads), (y_ref, grads_ref) = value_and_grads(fn, q, k, v, w), value_and_grads(ref, q, k, v, w)
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
    for a, e in zip(grads, grads_ref):
        np.testing.assert_allclose(a, e, rtol=1e-4, atol=1e-3 * float(jnp.abs(e).max()))


@pytest.mark.parametrize("length,blockwise", [(256, False), (257, True)])
def test_auto_runs_the_reference_up_to_one_block(length, blockwise):
    q, k, v, _ = inputs(length, 2, 1)
    jaxpr = str(jax.make_jaxpr(lambda q, k, v: attention(q, k, v, 0.3))(q, k, v))
    assert ("while" in jaxpr) == blockwise  # the block form loops over key blocks
    assert OPS["attention"].choice("cpu")[0] == "block" and OPS["attention"].choice("gpu")[0] == "reference"
    assert set(OPS["attention"].impls) == {"reference", "block", "xla"}


def test_long_sequence_bf16_gradients_finite():
    """Several blocks in bf16: the fp32 running max and sums keep the output and gradients finite and close."""
    q, k, v, w = (a.astype(jnp.bfloat16) for a in inputs(600, 2, 1, seed=1))
    y, grads = value_and_grads(lambda q, k, v: attention(q, k, v, 0.3, impl="block"), q, k, v, w)
    y_ref = naive.reference(*(a.astype(jnp.float32) for a in (q, k, v)), 0.3)
    assert y.dtype == jnp.bfloat16 and all(jnp.isfinite(g.astype(jnp.float32)).all() for g in grads)
    np.testing.assert_allclose(y.astype(jnp.float32), y_ref, atol=3e-2)


@pytest.mark.parametrize("options", ["kv_heads=2 softcap=30 window=100", "rope=true scale=0.1"])
def test_layer_past_one_block_matches_its_masked_form(options, monkeypatch):
    """The attention layer over 300 tokens (auto: the blockwise form) against the same layer forced to the reference."""
    import hybridc
    from hybridc_jax.layers import attn

    spec = hybridc.load(f"dim 64\nlayers attn(heads=4, {options.replace(' ', ', ')})\n").layers[0].mixers[0]
    params = attn.init(64, spec, key=jax.random.PRNGKey(0))
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 300, 64))
    fast = attn.apply(params, x, spec)[0]
    monkeypatch.setenv("HYBRIDC_KERNEL", "attention=reference")
    np.testing.assert_allclose(fast, attn.apply(params, x, spec)[0], rtol=1e-5, atol=1e-5)
