"""`generate` (torch and JAX): greedy == the argmax of the full forward's logits token by token, the top-k / top-p
masks against a direct numpy computation, stop tokens and padding, seeded sampling, a compiled step == the eager
one, and JAX generate == torch generate (greedy) on the same weights."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import hybridc  # noqa: E402
from hybridc_torch.generate import generate, top_k_mask, top_p_mask  # noqa: E402

from programs import SMALL  # noqa: E402

PROGRAM = "layers mamba2 attn(window=none, rope=true) mamba attn; vocab 30; output logits"


def make(text=PROGRAM):
    m = hybridc.load(text + "\n" + SMALL)
    torch.manual_seed(0)
    return m, hybridc.build(m).eval()


def prompt(b=3, length=5, seed=2):
    return torch.randint(0, 30, (b, length), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("program", [PROGRAM, PROGRAM + "; meta_tokens 2", "layers gru attn(window=3); vocab 30; "
                                     "output logits"], ids=["global", "meta", "window"])
def test_greedy_is_argmax_of_the_full_forward(program):
    m, net = make(program)
    p = prompt()
    out = generate(net, p, 9, temperature=0)
    seq = p
    with torch.no_grad():
        for _ in range(9):
            seq = torch.cat([seq, net(seq)[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(out, seq)


def np_top_k(z, k):
    out = z.copy()
    for row in out:
        kth = np.sort(row)[::-1][k - 1]
        row[row < kth] = -np.inf
    return out


def np_top_p(z, p):
    out = z.copy()
    for row in out:
        probs = np.exp(row - row.max())
        probs /= probs.sum()
        order = np.argsort(-probs, kind="stable")
        mass = 0.0
        for j in order:  # keep while the more likely tokens' mass is still below p
            if mass >= p:
                row[j] = -np.inf
            mass += probs[j]
    return out


@pytest.mark.parametrize("k", [1, 3, 7, 30])
def test_top_k_mask_matches_numpy(k):
    z = torch.randn(4, 30, generator=torch.Generator().manual_seed(k))
    np.testing.assert_array_equal(top_k_mask(z, k).numpy(), np_top_k(z.numpy(), k))


@pytest.mark.parametrize("p", [0.05, 0.3, 0.9, 0.999, 1.0])
def test_top_p_mask_matches_numpy(p):
    z = 3 * torch.randn(4, 30, generator=torch.Generator().manual_seed(int(p * 100)), dtype=torch.float64)
    got = top_p_mask(z, p).numpy()
    np.testing.assert_array_equal(np.isinf(got), np.isinf(np_top_p(z.numpy(), p)))
    assert (np.isfinite(got).sum(-1) >= 1).all()


def test_sampling_is_seeded_and_stays_in_the_top_k():
    m, net = make()
    p = prompt()
    a = generate(net, p, 6, temperature=0.8, top_k=2, top_p=0.9, generator=torch.Generator().manual_seed(5))
    b = generate(net, p, 6, temperature=0.8, top_k=2, top_p=0.9, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and a.shape == (3, 11)
    with torch.no_grad():  # each sampled token is one of the two most likely after its prefix
        for t in range(5, 11):
            top2 = net(a[:, :t])[:, -1].topk(2, dim=-1).indices
            assert (top2 == a[:, t:t + 1]).any(-1).all()


def test_stop_tokens_pad_rows_and_end_the_batch():
    m, net = make()
    p = prompt()
    greedy = generate(net, p, 12, temperature=0)
    stop = int(greedy[0, 7])  # row 0 stops at its third new token (or earlier, if it appeared before)
    out = generate(net, p, 12, temperature=0, stop_tokens=[stop], pad_id=29)
    for row, full in zip(out, greedy):
        new, ref = row[5:], full[5:]
        hits = (ref == stop).nonzero()
        n = int(hits[0]) + 1 if len(hits) else len(new)
        assert torch.equal(new[:n], ref[:n]) and (new[n:] == 29).all()
    ends = [int((r[5:] == stop).nonzero()[0]) + 1 if (r[5:] == stop).any() else 12 for r in greedy]
    assert out.shape[1] == 5 + max(ends)


def test_compiled_step_equals_eager():
    """torch.compile(net.step) runs as one graph (no break: the CPU C++ ops step aside under compile) and gives the
    eager step's logits (a small model, a few steps)."""
    m, net = make("layers mamba2 attn(window=none); vocab 30; output logits")
    p = prompt(b=2, length=3)
    step = torch.compile(net.step, dynamic=True, fullgraph=True)
    with torch.no_grad():
        s1 = net.init_state(2, max_len=8)
        s2 = net.init_state(2, max_len=8)
        y1, s1 = net(p, state=s1)
        y2, s2 = net(p, state=s2)
        tok = y1[:, -1].argmax(-1)
        for _ in range(3):
            a, s1 = net.step(tok, s1)
            b, s2 = step(tok, s2)
            torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)
            tok = a.argmax(-1)


def test_jax_generate_equals_torch_greedy():
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp

    from hybridc_jax.generate import generate as jgenerate

    m, net = make(PROGRAM + "; meta_tokens 2")
    params = {k: jnp.asarray(v.numpy()) for k, v in net.state_dict().items()}
    jnet = hybridc.build(m, backend="jax")
    p = prompt()
    want = generate(net, p, 8, temperature=0, stop_tokens=[3], pad_id=0)
    got = jgenerate(jnet, params, jnp.asarray(p.numpy()), 8, temperature=0, stop_tokens=[3], pad_id=0)
    np.testing.assert_array_equal(np.asarray(got), want.numpy())
    sampled = jgenerate(jnet, params, jnp.asarray(p.numpy()), 5, temperature=1.0, top_k=3, top_p=0.8,
                        key=jax.random.PRNGKey(0))
    assert sampled.shape == (3, 10)


def test_jax_jit_step_donates_the_state_and_equals_apply():
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp

    from hybridc_jax import jit_step

    m, _ = make()
    jnet = hybridc.build(m, backend="jax")
    params = jnet.init(jax.random.PRNGKey(0))
    x = jnp.asarray(prompt(b=2, length=7).numpy())
    full = jnet.apply(params, x)
    y, state = jnet.apply(params, x[:, :3], jnet.init_state(2, max_len=7), start=True)
    step, ys = jit_step(jnet), [y]
    for t in range(3, 7):
        old = state
        y_t, state = step(params, x[:, t], state)
        ys.append(y_t[:, None])
    assert old["layers"][1]["mixer"]["k"].is_deleted()  # donated: its buffers went to the new state
    np.testing.assert_allclose(np.asarray(jnp.concatenate(ys, 1)), np.asarray(full), atol=1e-5, rtol=1e-5)
