"""The fused C++ decoding steps (ops/decode_step.py, hybridc_native/csrc/decode_step.cpp) against the layers' pure
`step`: outputs and states after a prefill and a few in-place steps (`step_`), batch 1 (the in/out projections in
the kernel) and 3 (torch's), odd channel and state counts (vector tails), every gate / norm / dt / scale option; the
state is written in place; other impls and autograd fall back."""
from types import SimpleNamespace as NS

import pytest

torch = pytest.importorskip("torch")

from hybridc.kinds import spec_class  # noqa: E402
from hybridc_torch.layers.mamba import OP_ENTRY, Mamba  # noqa: E402
from hybridc_torch.layers.mamba2 import Mamba2  # noqa: E402
from hybridc_torch.ops import _cpp_library, decode_step  # noqa: E402

pytestmark = pytest.mark.skipif(not _cpp_library.available(), reason="the C++ kernels library does not build here")


def m1(**kw):
    base = dict(kind="mamba", state=16, expand=2, inner=None, conv=4, dt_rank=3, proj_bias=False, conv_bias=True,
                inner_norm="none", eps=1e-6, heads=1)
    return NS(**(base | kw))


def m2(dim, **options):
    cls = spec_class("mamba2")
    return NS(**cls(**cls.resolve({"heads": "auto", "inner": "auto", **options}, dim)).model_dump())


LAYERS = {  # id -> (layer class, dim, spec)
    "mamba-N16-E2-K4": (Mamba, 16, m1()),
    "mamba-N19-I37-K3-weighted-noconvbias": (Mamba, 16, m1(state=19, inner=37, conv=3, inner_norm="weighted",
                                                          conv_bias=False, eps=1e-5)),
    "mamba-N5-I21-K2-plain-projbias": (Mamba, 12, m1(state=5, inner=21, conv=2, dt_rank=2, inner_norm="plain",
                                                     proj_bias=True)),
    "mamba2-N16-P8-G2": (Mamba2, 16, m2(16, state=16, expand=2, conv=4, head_dim=8, groups=2, chunk=4)),
    "mamba2-N13-P5-H3-normfirst-noconvbias": (Mamba2, 16, m2(16, state=13, heads=3, head_dim=5, conv=3, chunk=4,
                                                             norm_before_gate=True, conv_bias=False)),
    "mamba2-N8-P8-H3-nonorm-projbias-mup-dtlimits": (Mamba2, 16, m2(
        16, state=8, heads=3, head_dim=8, conv=4, chunk=4, out_norm=False, proj_bias=True, in_scale=0.5,
        out_scale=2.0, z_scale=1.5, x_scale=0.7, b_scale=1.2, c_scale=0.9, dt_scale=1.1, dt_min=0.01, dt_max=0.05)),
    "mamba2-N16-P16-G1-inscale-outscale": (Mamba2, 20, m2(20, state=16, heads=2, head_dim=16, conv=4, chunk=4,
                                                          in_scale=0.5, out_scale=2.0)),
}


def _layer(layer_id):
    cls, dim, spec = LAYERS[layer_id]
    torch.manual_seed(0)
    layer = cls(dim, spec).eval()
    with torch.no_grad():  # non-trivial D, dt bias, conv bias, norm weights
        for p in layer.parameters():
            if p.dim() == 1:
                p.add_(torch.randn_like(p) * 0.3)
    return layer, dim


@pytest.mark.parametrize("batch", [1, 3], ids=lambda b: f"B{b}")
@pytest.mark.parametrize("layer_id", list(LAYERS))
def test_fused_step_equals_pure_step(layer_id, batch, single_thread):
    layer, dim = _layer(layer_id)
    x = torch.randn(batch, 7, dim, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert decode_step.usable(OP_ENTRY, "auto", x)
        _, pure = layer(x[:, :3], layer.init_state(batch))
        fused = {k: v.clone() for k, v in pure.items()}
        for t in range(3, 7):
            y_pure, pure = layer.step(x[:, t], pure)
            y_fused = layer.step_(x[:, t], fused)
            torch.testing.assert_close(y_fused, y_pure, rtol=1e-5, atol=1e-5)
            for key in pure:
                torch.testing.assert_close(fused[key], pure[key], rtol=1e-5, atol=1e-5)
            if t == 3:
                storage = {k: v.data_ptr() for k, v in fused.items()}
    assert {k: v.data_ptr() for k, v in fused.items()} == storage  # written in place after the first step


def test_other_impls_fall_back_to_the_pure_step(single_thread):
    layer, dim = _layer("mamba-N16-E2-K4")
    layer.impl = "reference"
    x = torch.randn(2, dim)
    with torch.no_grad():
        state = layer.init_state(2)
        y_pure, new = layer.step(x, layer.init_state(2))
        torch.testing.assert_close(layer.step_(x, state), y_pure, rtol=0, atol=0)
    assert all(torch.equal(state[k], new[k]) for k in new)
    assert not decode_step.usable(OP_ENTRY, "auto", x)  # grad enabled: the differentiable pure step
