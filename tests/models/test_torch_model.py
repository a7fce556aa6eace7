"""The torch backend end to end: every kind and preset builds, trains, is causal, counts its parameters as
`describe` does, and decodes (prefill + steps) exactly as the full forward."""
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

import hybridc  # noqa: E402
from hybridc_torch import generate  # noqa: E402
from hybridc_torch.model import state_bytes  # noqa: E402

from programs import PROGRAMS, SMALL  # noqa: E402

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.hyb"))


def make(text, dropout=0.0):
    m = hybridc.load(text + "\n" + SMALL + f"dropout {dropout}\n")
    torch.manual_seed(0)
    return m, hybridc.build(m)


def inputs(m, b=2, length=13, seed=1):
    g = torch.Generator().manual_seed(seed)
    if m.vocab is not None:
        return torch.randint(0, m.vocab, (b, length), generator=g)
    return torch.randn(b, length, m.input, generator=g)


@pytest.mark.parametrize("name", PROGRAMS)
def test_forward_backward_shapes_and_params(name):
    m, net = make(PROGRAMS[name])
    x = inputs(m)
    y = net(x)
    want = {"last": (2, m.dim), "sequence": (2, 13, m.dim), "logits": (2, 13, m.vocab or 0)}[m.output]
    assert tuple(y.shape) == want
    with torch.no_grad():  # some published inits zero an output projection (RWKV-7): wake every path up
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    net(x).square().mean().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()
               or p.grad.abs().sum() == 0]
    assert not missing
    assert sum(p.numel() for p in net.parameters()) == hybridc.describe(m)["params"]


@pytest.mark.parametrize("name", PROGRAMS)
def test_causal(name):
    text = PROGRAMS[name]
    m, net = make(text + ("\noutput sequence" if "output" not in text else ""))
    net.eval()
    x = inputs(m)
    t = 7
    x2 = x.clone()
    if m.vocab is not None:
        x2[:, t:] = (x2[:, t:] + 1) % m.vocab
    else:
        x2[:, t:] += torch.randn_like(x2[:, t:])
    with torch.no_grad():
        y, y2 = net(x), net(x2)
    assert torch.equal(y[:, :t], y2[:, :t])
    assert not torch.allclose(y[:, t:], y2[:, t:])


@pytest.mark.parametrize("split", [0, 1, 5, 12], ids=lambda n: f"split{n}")
@pytest.mark.parametrize("name", PROGRAMS)
def test_prefill_plus_steps_equals_forward(name, split):
    text = PROGRAMS[name] + ("\noutput sequence" if "output" not in PROGRAMS[name] else "")
    m, net = make(text)
    net.eval()
    x = inputs(m, length=13)
    with torch.no_grad():
        full = net(x)
        state = net.init_state(2, max_len=13 + m.meta_tokens)
        ys = []
        if split:
            y, state = net(x[:, :split], state=state)
            ys.append(y)
        for t in range(split, 13):
            y, state = net.step(x[:, t], state)
            ys.append(y[:, None])
    got = torch.cat(ys, dim=1)
    assert got.shape == full.shape
    torch.testing.assert_close(got, full, atol=1e-5, rtol=1e-5)
    assert state_bytes(state) == hybridc.describe(m, context=13)["state_bytes"] * 2


def test_state_bytes_window_and_meta():
    m, net = make("layers attn(window=4) attn(window=none) mamba; meta_tokens 2")
    with torch.no_grad():
        _, st = net(inputs(m, b=1, length=9), state=net.init_state(1, max_len=11))
    assert [s["mixer"]["k"].shape[2] for s in st["layers"][:2]] == [2 + 4, 2 + 9]  # meta slots, then window / all
    assert state_bytes(st) == hybridc.describe(m, context=9)["state_bytes"]


def test_meta_tokens_are_stripped_and_learned():
    m, net = make("layers mamba attn; meta_tokens 4; output sequence")
    x = inputs(m)
    y = net(x)
    assert y.shape == (2, 13, 32)
    y.sum().backward()
    assert net.meta_tokens.grad.abs().sum() > 0


def test_sliding_window_limits_attention():
    m, net = make("layers attn(window=3); output sequence; ffn after=none")
    net.eval()
    x = inputs(m, b=1, length=10)
    x2 = x.clone()
    x2[:, 0] += 5.0
    with torch.no_grad():
        y, y2 = net(x), net(x2)
    assert torch.equal(y[:, 3:], y2[:, 3:]) and not torch.equal(y[:, :3], y2[:, :3])


def test_shared_weights_are_one_module():
    m, net = make("layers mamba attn mamba attn; share attn")
    assert net.layers[1] is net.layers[3] and net.layers[0] is not net.layers[2]


def test_generate_uses_state():
    m, net = make("layers mamba attn gru; vocab 20; output logits; meta_tokens 2")
    net.eval()
    prompt = torch.randint(0, 20, (2, 5))
    out = generate(net, prompt, max_new_tokens=6, temperature=0)
    assert out.shape == (2, 11) and torch.equal(out[:, :5], prompt)
    with torch.no_grad():  # greedy continuation equals recomputing the whole prefix each time
        seq = prompt
        for _ in range(6):
            seq = torch.cat([seq, net(seq)[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(out, seq)
    sampled = generate(net, prompt, 4, temperature=1.0, top_k=3, generator=torch.Generator().manual_seed(0))
    assert sampled.shape == (2, 9)


def test_init_is_deterministic():
    a = make("preset hymba")[1].state_dict()
    b = make("preset hymba")[1].state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_dropout_only_in_training():
    m, net = make("layers mamba attn", dropout=0.5)
    x = inputs(m)
    net.eval()
    with torch.no_grad():
        assert torch.equal(net(x), net(x))
    net.train()
    with torch.no_grad():
        assert not torch.equal(net(x), net(x))


@pytest.mark.parametrize("name", ["preset-hymba", "preset-zamba", "feat-vocab_logits", "feat-rwkv_chain", "feat-rms_swiglu"])
def test_emitter_round_trip(name, tmp_path):
    import importlib.util

    from hybridc_torch.emit import emit

    m, net = make(PROGRAMS[name])
    path = tmp_path / "emitted.py"
    path.write_text(emit(m))
    spec = importlib.util.spec_from_file_location("emitted", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert "import hybridc\n" not in path.read_text() and "from hybridc " not in path.read_text()
    em = mod.Model()
    assert set(em.state_dict()) == set(net.state_dict())
    em.load_state_dict(net.state_dict())
    net.eval(), em.eval()
    x = inputs(m)
    with torch.no_grad():
        assert torch.equal(em(x), net(x))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_every_example_builds_and_runs(path):
    m = hybridc.load_file(path)
    torch.manual_seed(0)
    net = hybridc.build(m).eval()
    x = torch.randint(0, m.vocab, (1, 5)) if m.vocab is not None else torch.randn(1, 5, m.input)
    with torch.no_grad():
        y = net(x)
    assert torch.isfinite(y).all()
    assert sum(p.numel() for p in net.parameters()) == hybridc.describe(m)["params"]
