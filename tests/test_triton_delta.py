"""Triton GPU kernels for SSD and the (gated) delta rule == their sequential references, in values and gradients.

Kernels: ``triton_ssd`` (``ssd`` impl "triton") and ``triton_gated_delta_rule`` (``gated_delta_rule`` impl "triton";
``delta_rule`` impl "triton" is its g = 0 case). On CPU they run through Triton's interpreter (``TRITON_INTERPRET=1``,
set by conftest.py), so shapes are tiny and the chunk is 8 (tile 16): every length class is hit (1, 7, C-1, C, C+1,
3C+5), with the batch / initial state / decay-strength factors in a pairwise covering of four cases per length. The
backward (recomputation through the torch chunked form) is checked against the reference's gradients of every input.

Dimension glossary: B batch, T (L) time, H heads, K key dim, V value dim, P head dim, G groups, N state size, C chunk.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("triton", reason="triton is not installed: no Triton kernels to test")

from hybridc_torch.ops import OPS, _cpp_library, _triton, delta_rule, gated_delta_rule, ssd  # noqa: E402
from hybridc_torch.ops.gated_delta_rule import triton as tgdr  # noqa: E402
from hybridc_torch.ops.ssd import chunk as ssd_chunk  # noqa: E402
from hybridc_torch.ops.ssd import naive as ssd_naive  # noqa: E402

C = 8
LENGTHS = sorted({1, 7, C - 1, C, C + 1, 3 * C + 5})                     # 7 is C - 1 here
# (batch, initial state, strong decay): every pair of factor values appears at every length
CASES = [(1, False, False), (1, True, True), (3, False, True), (3, True, False)]
CASE_IDS = ["B1-zero-weak", "B1-init-strong", "B3-zero-strong", "B3-init-weak"]


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    """Tiny tensors: intra-op threads only add contention on a shared 2-core box."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _close(actual, expected, rtol=1e-4, atol=1e-5, what=""):
    """rtol plus an atol scaled by the reference's magnitude (fp32 sums of many terms)."""
    scale = max(1.0, float(expected.abs().max())) if expected.numel() else 1.0
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol * scale, msg=lambda m: f"{what}: {m}")


def _run(fn, inputs: dict, seed=1):
    """fn(**fresh leaf copies) -> (outputs, {name: grad}) for a random projection of every output."""
    leaves = {n: None if x is None else x.detach().clone().requires_grad_(x.is_floating_point())
              for n, x in inputs.items()}
    outs = fn(**leaves)
    gen = torch.Generator().manual_seed(seed)
    loss = sum((o.float() * torch.randn(o.shape, generator=gen)).sum() for o in outs)
    wrt = {n: x for n, x in leaves.items() if x is not None and x.requires_grad}
    grads = torch.autograd.grad(loss, list(wrt.values()), allow_unused=True)
    return [o.detach() for o in outs], dict(zip(wrt, grads))


def _compare(fn_ref, fn_fast, inputs, rtol=1e-4, atol=1e-5):
    """Outputs (dtype, shape, values) and the gradient of every input of fn_fast against fn_ref."""
    (outs_r, grads_r), (outs_f, grads_f) = _run(fn_ref, inputs), _run(fn_fast, inputs)
    for i, (o_f, o_r) in enumerate(zip(outs_f, outs_r)):
        assert o_f.dtype == o_r.dtype and o_f.shape == o_r.shape
        _close(o_f, o_r, rtol, atol, f"output {i}")
    assert grads_f.keys() == grads_r.keys()
    for name, g_r in grads_r.items():
        g_f = grads_f[name]
        if g_r is None:
            assert g_f is None or not g_f.any(), name
        else:
            _close(g_f, g_r, rtol, 10 * atol, f"grad of {name}")


# ---------------------------------------------------------------- (gated) delta rule

def _gdr_inputs(B, T, *, init, strong, H=2, K=8, V=6, seed=0, gated=True):
    """Unit-norm q/k, beta in (0, 1); strong: g around -3 per step, weak: g near 0 (plain delta rule: beta near 1)."""
    gen = torch.Generator().manual_seed(seed)

    def rn(*shape):
        return torch.randn(*shape, generator=gen)

    kw = dict(q=F.normalize(rn(B, T, H, K), dim=-1), k=F.normalize(rn(B, T, H, K), dim=-1), v=rn(B, T, H, V))
    if gated:
        kw["g"] = (-6.0 if strong else -0.05) * torch.sigmoid(rn(B, T, H))
        kw["beta"] = torch.sigmoid(rn(B, T, H))
    else:
        kw["beta"] = 0.9 + 0.1 * torch.sigmoid(rn(B, T, H)) if strong else 0.5 * torch.sigmoid(rn(B, T, H))
    kw["initial_state"] = 0.5 * rn(B, H, K, V) if init else None
    return kw


def _gdr_fn(impl, chunk_size=C, gated=True):
    entry = gated_delta_rule if gated else delta_rule

    def fn(**kw):
        return entry(**kw, output_final_state=True, impl=impl, chunk_size=chunk_size)
    return fn


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("T", LENGTHS, ids=[f"T{t}" for t in LENGTHS])
def test_gated_delta_rule_triton_matches_reference(T, case):
    B, init, strong = case
    kw = _gdr_inputs(B, T, init=init, strong=strong, seed=T + 10 * B)
    _compare(_gdr_fn("reference"), _gdr_fn("triton"), kw)


@pytest.mark.parametrize("T,B,init,strong", [(C + 1, 1, False, False), (3 * C + 5, 3, True, True)],
                         ids=["T9-B1-zero-weak", "T29-B3-init-strong"])
def test_delta_rule_triton_matches_reference(T, B, init, strong):
    kw = _gdr_inputs(B, T, init=init, strong=strong, seed=T, gated=False)
    _compare(_gdr_fn("reference", gated=False), _gdr_fn("triton", gated=False), kw)


def test_gated_delta_rule_triton_shapes():
    """Default chunk 64 (tile 64, ragged tail), several V blocks (V > 64), odd K; the kernel module called directly."""
    kw = _gdr_inputs(1, 70, init=True, strong=False, H=1, K=5, V=3)
    fast = tgdr.triton_gated_delta_rule

    def fn(**kw):
        return fast(**kw, output_final_state=True)
    _compare(_gdr_fn("reference"), fn, kw)
    kw = _gdr_inputs(1, C + 1, init=True, strong=True, H=1, K=8, V=70)
    _compare(_gdr_fn("reference"), _gdr_fn("triton"), kw)
    o, S = fast(**_gdr_inputs(2, C, init=False, strong=False), chunk_size=C)
    assert S is None and o.shape == (2, C, 2, 6) and o.is_contiguous()


def test_triton_needs_cuda_or_the_interpreter(monkeypatch):
    from hybridc_torch.ops.ssd import triton as triton_ssd

    monkeypatch.setattr(tgdr, "_INTERPRETED", False)
    monkeypatch.setattr(triton_ssd, "_INTERPRETED", False)
    with pytest.raises(ValueError, match="needs CUDA tensors"):
        gated_delta_rule(**_gdr_inputs(1, 3, init=False, strong=False), impl="triton")
    kw = _ssd_inputs(1, 3, init=False, strong=False)
    with pytest.raises(ValueError, match="needs CUDA tensors"):
        _ssd_fn("triton")(**kw)


def test_gated_delta_rule_triton_empty_and_fp64():
    kw = _gdr_inputs(2, 0, init=True, strong=False)
    o, S = gated_delta_rule(**kw, output_final_state=True, impl="triton")
    assert o.shape == (2, 0, 2, 6)
    torch.testing.assert_close(S, kw["initial_state"])
    kw = {n: None if x is None else x.double() for n, x in _gdr_inputs(2, 11, init=True, strong=True).items()}
    o, S = gated_delta_rule(**kw, output_final_state=True, impl="triton", chunk_size=C)   # the torch chunked form
    o_r, S_r = gated_delta_rule(**kw, output_final_state=True, impl="reference")
    assert o.dtype == S.dtype == torch.float64
    torch.testing.assert_close(o, o_r, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(S, S_r, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("gated", [True, False], ids=["gated", "delta"])
def test_delta_triton_bf16(gated):
    """bf16 inputs against the fp32 reference on the same (rounded) values: o in bf16, state in fp32; loose grads."""
    kw = _gdr_inputs(2, 2 * C + 3, init=True, strong=False, gated=gated)
    kw_bf = {n: None if x is None else x.bfloat16() for n, x in kw.items()}
    kw_bf["initial_state"] = kw["initial_state"]                            # the state stays fp32
    kw_32 = {n: None if x is None else x.float() for n, x in kw_bf.items()}
    (o_r, S_r), g_r = _run(_gdr_fn("reference", gated=gated), kw_32)
    (o, S), g = _run(_gdr_fn("triton", gated=gated), kw_bf)
    assert o.dtype == torch.bfloat16 and S.dtype == torch.float32
    _close(o.float(), o_r, 2e-2, 2e-2, "output")
    _close(S, S_r, 2e-2, 2e-2, "final state")
    for name in g_r:
        _close(g[name].float(), g_r[name], 5e-2, 5e-2, f"grad of {name}")


def test_delta_auto_picks_triton_on_cuda_only(monkeypatch):
    monkeypatch.delenv("HYBRIDC_KERNEL", raising=False)

    cpu = "cpp" if _cpp_library.available() else "chunk"
    for op in (OPS["gated_delta_rule"], OPS["delta_rule"]):
        assert op.auto("cpu") == cpu and op.auto("cuda") == "triton"
        assert op.pick("auto", "cpu") is op.get(cpu)
        assert op.pick("auto", "cuda") is op.get("triton")
        assert op.pick("triton", "cpu") is op.get("triton")
        with pytest.raises(ValueError, match="'triton'"):
            op.pick("nope", "cpu")
    monkeypatch.setattr(_triton, "triton_available", lambda: False)
    for op in (OPS["gated_delta_rule"], OPS["delta_rule"]):
        assert op.pick("auto", "cuda") is op.get("reference")


# ---------------------------------------------------------------- SSD

def _ssd_inputs(B, L, *, init, strong, groups=1, full=True, H=2, P=6, N=5, seed=0):
    """full: D (H,), z, dt_bias and softplus; plain: none of them (dt positive). strong: |dt A| ~ 1-2 per step."""
    gen = torch.Generator().manual_seed(seed)

    def rn(*shape):
        return torch.randn(*shape, generator=gen)

    A = -(1.0 + 2.0 * torch.rand(H, generator=gen)) if strong else -0.05 * torch.rand(H, generator=gen)
    kw = dict(x=rn(B, L, H, P), A=A, B=rn(B, L, groups, N), C=rn(B, L, groups, N))
    if full:
        kw.update(dt=0.5 * rn(B, L, H), D=rn(H), z=rn(B, L, H, P), dt_bias=0.5 * rn(H) - 0.5, dt_softplus=True)
    else:
        kw["dt"] = 0.1 + torch.rand(B, L, H, generator=gen)
    kw["initial_states"] = 0.5 * rn(B, H, P, N) if init else None
    return kw


def _ssd_fn(impl, chunk_size=C):
    def fn(dt_softplus=False, **kw):
        return ssd(**kw, chunk_size=chunk_size, dt_softplus=dt_softplus, return_final_states=True, impl=impl)
    return fn


def _ssd_compare(kw, chunk_size=C, **tol):
    softplus = kw.pop("dt_softplus", False)
    ref, fast = _ssd_fn("reference", chunk_size), _ssd_fn("triton", chunk_size)
    _compare(lambda **a: ref(softplus, **a), lambda **a: fast(softplus, **a), kw, **tol)


# groups and options vary with the case so that every length sees G = 1 and 2, with and without D/z/bias/softplus
SSD_CASES = [case + extra for case, extra in zip(CASES, [(1, False), (2, True), (1, True), (2, False)])]
SSD_IDS = [f"{i}-G{c[3]}-{'full' if c[4] else 'plain'}" for i, c in zip(CASE_IDS, SSD_CASES)]


@pytest.mark.parametrize("case", SSD_CASES, ids=SSD_IDS)
@pytest.mark.parametrize("L", LENGTHS, ids=[f"L{t}" for t in LENGTHS])
def test_ssd_triton_matches_reference(L, case):
    B, init, strong, groups, full = case
    _ssd_compare(_ssd_inputs(B, L, init=init, strong=strong, groups=groups, full=full, seed=L + 10 * B))


@pytest.mark.parametrize("option", ["D_per_head", "D_per_channel", "z", "dt_bias", "softplus"])
def test_ssd_triton_each_option(option):
    kw = _ssd_inputs(2, 2 * C + 3, init=True, strong=True, groups=2, full=False, seed=5)
    gen = torch.Generator().manual_seed(6)
    extra = {"D_per_head": lambda: dict(D=torch.randn(2, generator=gen)),
             "D_per_channel": lambda: dict(D=torch.randn(2, 6, generator=gen)),
             "z": lambda: dict(z=torch.randn(kw["x"].shape, generator=gen)),
             "dt_bias": lambda: dict(dt_bias=torch.rand(2, generator=gen)),
             "softplus": lambda: dict(dt_softplus=True)}[option]
    kw.update(extra())
    _ssd_compare(kw)


def test_ssd_triton_large_tiles():
    """P and N over 64 (two P blocks, two N blocks in the state kernel); chunk 128 (two row blocks per chunk)."""
    _ssd_compare(_ssd_inputs(1, C + 1, init=True, strong=False, H=1, P=70, N=70))
    _ssd_compare(_ssd_inputs(1, 140, init=True, strong=False, H=1, P=3, N=4), chunk_size=128)


@pytest.mark.parametrize("chunk_size", [1, 24], ids=["C1", "C24"])
@pytest.mark.parametrize("kernel", ["gated_delta_rule", "ssd"])
def test_triton_other_chunk_sizes(kernel, chunk_size):
    """A chunk of one step, and one that is not a power of two (tile 32, masked rows)."""
    length = 5 if chunk_size == 1 else 30
    if kernel == "ssd":
        _ssd_compare(_ssd_inputs(1, length, init=True, strong=True, H=1), chunk_size=chunk_size)
    else:
        kw = _gdr_inputs(1, length, init=True, strong=True, H=1)
        _compare(_gdr_fn("reference"), _gdr_fn("triton", chunk_size), kw)


def test_ssd_triton_empty_and_fp64():
    kw = _ssd_inputs(2, 0, init=True, strong=False)
    kw.pop("dt_softplus")
    y, S = _ssd_fn("triton")(**kw)
    assert y.shape == (2, 0, 2, 6)
    torch.testing.assert_close(S, kw["initial_states"])
    kw = {n: x.double() if torch.is_tensor(x) else x for n, x in _ssd_inputs(2, 11, init=True, strong=True).items()}
    y, S = _ssd_fn("triton")(**kw)
    y_r, S_r = _ssd_fn("reference")(**kw)
    assert y.dtype == torch.float64
    torch.testing.assert_close(y, y_r, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(S, S_r, rtol=1e-10, atol=1e-10)


def test_ssd_triton_bf16():
    """bf16 inputs against the fp32 reference on the same (rounded) values: y in bf16, state in fp32; loose grads."""
    kw = _ssd_inputs(2, 2 * C + 3, init=True, strong=False, groups=2)
    softplus = kw.pop("dt_softplus")
    kw_bf = {n: x.bfloat16() if n not in ("A", "initial_states") else x for n, x in kw.items()}
    kw_32 = {n: x.float() for n, x in kw_bf.items()}
    (y_r, S_r), g_r = _run(lambda **a: _ssd_fn("reference")(softplus, **a), kw_32)
    (y, S), g = _run(lambda **a: _ssd_fn("triton")(softplus, **a), kw_bf)
    assert y.dtype == torch.bfloat16 and S.dtype == torch.float32
    _close(y.float(), y_r, 2e-2, 2e-2, "output")
    _close(S, S_r, 2e-2, 2e-2, "final state")
    for name in g_r:
        _close(g[name].float(), g_r[name], 5e-2, 5e-2, f"grad of {name}")


def test_ssd_auto_picks_triton_on_cuda_only(monkeypatch):
    monkeypatch.delenv("HYBRIDC_KERNEL", raising=False)
    assert OPS["ssd"].pick("auto", "cpu") is ssd_chunk.chunk_ssd
    assert OPS["ssd"].pick("auto", "cuda") is OPS["ssd"].get("triton")
    monkeypatch.setattr(_triton, "triton_available", lambda: False)
    assert OPS["ssd"].pick("auto", "cuda") is ssd_naive.reference
