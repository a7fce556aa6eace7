"""`pad_token N` in both backends: the embedding's row N is zero at init and the lookup gives it no gradient
(torch.nn.Embedding's padding_idx; transformers' Bamba and Jamba build `nn.Embedding(vocab, dim, pad_token_id)`).
A tied head still reads and trains that row, as in transformers. The emitted modules (`hybridc compile`) carry it."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import hybridc  # noqa: E402
from hybridc import registry  # noqa: E402

V, D, PAD = 40, 32, 3
TEXT = (f"layers mamba2 attn; dim {D}; vocab {V}; pad_token {PAD}; output logits; dropout 0; "
        "attn heads=2 head_dim=16; mamba2 head_dim=16 state=8 chunk=8")
TIED = TEXT + "; tie_embeddings true"
IDS = [[3, 1, 5, 3, 7, 0], [2, 3, 3, 9, 11, 39]]  # the pad id among others, twice in a row


def _torch_grads(text: str, pad_row=None, seed: int = 0):
    """(net, embed.weight.grad, the gradient that reached the embedding's output) for a fixed loss."""
    torch.manual_seed(seed)
    net = hybridc.build(text)
    if pad_row is not None:
        with torch.no_grad():  # an imported checkpoint's pad row need not be zero
            net.embed.weight[PAD] = pad_row
    seen = {}

    def keep(mod, args, out):  # returns None: the output stays as it is
        out.retain_grad()
        seen["h"] = out

    net.embed.register_forward_hook(keep)
    ids = torch.tensor(IDS)
    w = torch.randn(*ids.shape, V, generator=torch.Generator().manual_seed(1))
    (net(ids) * w).sum().backward()
    return net, net.embed.weight.grad, seen["h"].grad


def test_torch_pad_row_starts_at_zero():
    torch.manual_seed(0)
    net = hybridc.build(TEXT)
    assert net.embed.padding_idx == PAD and torch.count_nonzero(net.embed.weight[PAD]) == 0
    assert torch.count_nonzero(net.embed.weight[PAD + 1]) == D
    torch.manual_seed(0)
    plain = hybridc.build(TEXT.replace(f"pad_token {PAD}", "pad_token none"))  # same draws, only the row differs
    assert plain.embed.padding_idx is None
    rows = [r for r in range(V) if r != PAD]
    assert torch.equal(net.embed.weight[rows], plain.embed.weight[rows])


def test_torch_pad_row_gets_no_gradient_as_nn_embedding_padding_idx():
    net, g, dh = _torch_grads(TEXT, pad_row=torch.full((D,), 0.5))
    assert torch.count_nonzero(g[PAD]) == 0
    used = sorted({i for row in IDS for i in row} - {PAD})
    assert all(torch.count_nonzero(g[i]) == D for i in used)
    ref = torch.nn.Embedding(V, D, padding_idx=PAD)
    with torch.no_grad():
        ref.weight.copy_(net.embed.weight)
    ref(torch.tensor(IDS)).backward(dh)
    torch.testing.assert_close(g, ref.weight.grad, rtol=1e-6, atol=1e-7)


def test_torch_tied_head_still_trains_the_pad_row():
    """Tied: row N's gradient is the head's alone; without pad_token it would add the lookup's sum over N's places."""
    row = torch.full((D,), 0.5)
    _, g, dh = _torch_grads(TIED, pad_row=row)
    _, g_plain, dh_plain = _torch_grads(TIED.replace(f"pad_token {PAD}", "pad_token none"), pad_row=row)
    assert torch.count_nonzero(g[PAD]) == D
    torch.testing.assert_close(dh, dh_plain, rtol=0, atol=0)  # the same forward: the pad row is only a weight row
    lookup = dh[torch.tensor(IDS) == PAD].sum(0)  # (D,)
    torch.testing.assert_close(g_plain[PAD] - g[PAD], lookup, rtol=1e-5, atol=1e-6)
    rows = [r for r in range(V) if r != PAD]
    torch.testing.assert_close(g[rows], g_plain[rows], rtol=0, atol=0)


@pytest.mark.parametrize("text", [TEXT, TIED], ids=["untied", "tied"])
def test_jax_pad_row_is_zero_and_its_gradients_are_torchs(text, tmp_path):
    jax = pytest.importorskip("jax")
    jn = hybridc.build(text, backend="jax")
    assert not np.asarray(jn.init(jax.random.PRNGKey(0))["embed.weight"][PAD]).any()
    net, g, _ = _torch_grads(text, pad_row=torch.full((D,), 0.5))
    hybridc.save_weights(net, tmp_path / "w.safetensors")
    params = hybridc.load_weights(jn, tmp_path / "w.safetensors")
    ids = np.asarray(IDS)
    w = torch.randn(*ids.shape, V, generator=torch.Generator().manual_seed(1)).numpy()
    grads = jax.grad(lambda p: (jn.apply(p, ids) * w).sum())(params)
    gj = np.asarray(grads["embed.weight"])
    assert (not gj[PAD].any()) if text == TEXT else gj[PAD].all()
    np.testing.assert_allclose(gj, g.numpy(), rtol=1e-4, atol=1e-5)


def test_without_pad_token_jax_lookup_is_unchanged():
    """No pad_token: the JAX lookup is the plain take (no stop_gradient in today's graphs)."""
    jax = pytest.importorskip("jax")
    from hybridc_jax.model import _embed

    graphs = {}
    for name, text in (("plain", TEXT.replace(f"; pad_token {PAD}", "")), ("pad", TEXT)):
        jn = hybridc.build(text, backend="jax")
        params = jn.init(jax.random.PRNGKey(0))
        graphs[name] = str(jax.make_jaxpr(lambda p: _embed(jn.cfg, p, np.asarray(IDS)))(params))  # noqa: B023
    assert "stop_gradient" not in graphs["plain"] and "stop_gradient" in graphs["pad"]


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_emitted_module_carries_the_pad_row(backend):
    m = hybridc.load(TIED)
    ns: dict = {}
    exec(compile(registry.get(backend).emit(m), f"<emitted {backend}>", "exec"), ns)
    if backend == "torch":
        torch.manual_seed(0)
        got = ns["Model"]()
        assert got.embed.padding_idx == PAD and torch.count_nonzero(got.embed.weight[PAD]) == 0
        return
    jax = pytest.importorskip("jax")
    params = ns["init"](jax.random.PRNGKey(0))
    assert not np.asarray(params["embed.weight"][PAD]).any()
    assert ns["CONFIG"].pad_token == PAD


# transformers' own padding_idx gradient (BambaForCausalLM through import-hf): tests/hf/test_hf_checkpoints.py
