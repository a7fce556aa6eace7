"""Sampling from a `vocab` model in JAX (hybridc_torch/generate.py's semantics): equal-length prompts prefilled once,
then a `lax.while_loop` of decoding steps inside one jitted call (the loop carry: XLA updates the caches in place);
greedy at temperature 0, else temperature, top-k, then top-p; a row stops at its first stop token
(kept), later positions hold `pad_id`; the loop ends when every row stopped. `jit_step(net)` is the jitted step alone,
its state argument donated.

Glossary: B batch, T prompt length, V vocab, n new tokens.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["generate", "jit_step", "sample", "top_k_mask", "top_p_mask"]


def jit_step(net):
    """jax.jit(net.step) with the state donated: `y_t, state = f(params, x_t, state)` reuses the old state's buffers.
    Kept on the model (one compile per model)."""
    fn = net.__dict__.get("_jit_step")
    if fn is None:
        fn = jax.jit(net.step, donate_argnums=(2,))
        net.__dict__["_jit_step"] = fn
    return fn


def generate(net, params, prompt_ids, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
             key=None, *, top_p: float | None = None, stop_tokens=(), pad_id: int | None = None):
    """prompt_ids (B, T) -> (B, T + n), n <= max_new_tokens (fewer when every row stopped). key: a PRNG key for
    sampling (temperature > 0). pad_id defaults to the model's pad_token, else the first stop token."""
    if net.cfg.output != "logits":
        raise ValueError("generate needs a model with `output logits`")
    if prompt_ids.ndim != 2 or prompt_ids.shape[1] == 0 or max_new_tokens < 1:
        raise ValueError(f"generate: prompt_ids must be (batch, length >= 1) token ids and max_new_tokens >= 1, "
                         f"got {tuple(prompt_ids.shape)} and {max_new_tokens}")
    stops = tuple(sorted(set(int(t) for t in stop_tokens)))
    pad = pad_id if pad_id is not None else net.cfg.pad_token if net.cfg.pad_token is not None else \
        (stops[0] if stops else 0)
    batch, length = prompt_ids.shape
    settings = (max_new_tokens, float(temperature), top_k, top_p, stops, int(pad))
    cache = net.__dict__.setdefault("_generate_fns", {})
    if settings not in cache:
        cache[settings] = jax.jit(_decode_fn(net, *settings))  # the loop carries the state in place
    state = net.init_state(batch, max_len=length + max_new_tokens + net.cfg.meta)
    key = jax.random.PRNGKey(0) if key is None else key
    new, n = cache[settings](params, jnp.asarray(prompt_ids), state, key)
    return jnp.concatenate([jnp.asarray(prompt_ids), new[:, :int(n)].astype(prompt_ids.dtype)], axis=1)


def _decode_fn(net, max_new: int, temperature: float, top_k, top_p, stops: tuple, pad: int):
    """(params, prompt (B, T), state, key) -> (new tokens (B, max_new), count n): the prefill, then the while loop."""
    stop_arr = jnp.asarray(stops, jnp.int32)

    def pick(logits, done, key):
        tok = sample(logits, temperature, top_k, top_p, key)  # (B,)
        if not stops:
            return tok, done
        tok = jnp.where(done, pad, tok)
        return tok, done | jnp.isin(tok, stop_arr)

    def run(params, prompt, state, key):
        logits, state = net.apply(params, prompt, state, start=True)  # (B, T, V)
        key, sub = jax.random.split(key)
        tok, done = pick(logits[:, -1], jnp.zeros(prompt.shape[:1], bool), sub)
        out = jnp.full((prompt.shape[0], max_new), pad, jnp.int32).at[:, 0].set(tok)

        def cond(c):
            i, _, _, done, _, _ = c
            return (i < max_new) & ~jnp.all(done)

        def body(c):
            i, tok, state, done, out, key = c
            logits, state = net.step(params, tok, state)  # (B, V)
            key, sub = jax.random.split(key)
            tok, done = pick(logits, done, sub)
            return i + 1, tok, state, done, out.at[:, i].set(tok), key

        i, _, _, _, out, _ = jax.lax.while_loop(cond, body, (jnp.int32(1), tok, state, done, out, key))
        return out, i

    return run


def top_k_mask(logits, k: int):
    """logits (B, V) with all but the k largest of each row set to -inf (ties with the k-th kept)."""
    if k >= logits.shape[-1]:
        return logits
    kth = jax.lax.top_k(logits, k)[0][:, -1:]  # (B, 1)
    return jnp.where(logits < kth, -jnp.inf, logits)


def top_p_mask(logits, p: float):
    """logits (B, V) keeping the smallest set of most likely tokens whose probability reaches p (at least one)."""
    if p >= 1.0:
        return logits
    order = jnp.argsort(-logits, axis=-1)  # (B, V) descending
    probs = jax.nn.softmax(jnp.take_along_axis(logits, order, axis=-1), axis=-1)
    before = jnp.cumsum(probs, axis=-1) - probs  # mass of the more likely tokens
    drop = jnp.take_along_axis(before >= p, jnp.argsort(order, axis=-1), axis=-1)  # back to vocab order
    return jnp.where(drop, -jnp.inf, logits)


def sample(logits, temperature: float, top_k=None, top_p=None, key=None):
    """logits (B, V) -> token ids (B,) int32: argmax at temperature 0, else a draw after temperature, top-k, top-p."""
    if temperature == 0:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    logits = logits.astype(jnp.float32) / temperature
    if top_k is not None:
        logits = top_k_mask(logits, top_k)
    if top_p is not None:
        logits = top_p_mask(logits, top_p)
    return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)
