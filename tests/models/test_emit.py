"""`hybridc compile`: the emitted module builds the same model as `hybridc.build`, weights included.

torch: exec the emitted code; its `Model()` and `hybridc.build(m, backend="torch")` give identical state dicts under
the same `torch.manual_seed` (RWKV-7's init depends on each layer's depth, so this catches an emitter that drops
layer_idx / n_layers). JAX: the emitted module's `init(key)` equals `hybridc.build(m, backend="jax").init(key)`.
Every preset and every example, at small widths, plus a model with two rwkv layers.
"""
from __future__ import annotations

import glob
from pathlib import Path

import pytest

import hybridc
from hybridc import registry
from hybridc.presets import PRESETS

from programs import SMALL

EXAMPLES = sorted(glob.glob(str(Path(__file__).resolve().parents[2] / "examples" / "*.hyb")))
SOURCES = {**{f"preset-{p}": f"preset {p}" for p in PRESETS},
           **{f"example-{Path(p).stem}": Path(p).read_text() for p in EXAMPLES},
           "rwkv-x2": "layers rwkv attn rwkv"}


def small(name):
    """The model of `name` at small widths: the backend tests' overrides (SMALL: `dim 32`, per-kind widths) added to
    its text, less the settings it makes itself (a setting may not be set twice; its `dim` line gives way)."""
    lines = [line for line in SOURCES[name].splitlines() if line.split()[:1] != ["dim"]]
    for line in SMALL.splitlines():
        kind, *options = line.split()
        own = {o.split("=")[0] for mine in lines if mine.split()[:1] == [kind] for o in mine.split()[1:]}
        keep = [o for o in options if o.split("=")[0] not in own]
        if keep:
            lines.append(" ".join([kind, *keep]))
    return hybridc.load("\n".join(lines))


def emitted(model, backend) -> dict:
    """The namespace of the module `hybridc compile --backend <backend>` writes for `model`."""
    ns: dict = {}
    exec(compile(registry.get(backend).emit(model), f"<emitted {backend}>", "exec"), ns)
    return ns


@pytest.mark.parametrize("name", list(SOURCES))
def test_torch_emitted_module_has_the_built_weights(name):
    torch = pytest.importorskip("torch")
    m = small(name)
    torch.manual_seed(0)
    want = hybridc.build(m, backend="torch").state_dict()
    torch.manual_seed(0)
    got = emitted(m, "torch")["Model"]().state_dict()
    assert list(got) == list(want)
    assert [k for k in want if not torch.equal(got[k], want[k])] == []


@pytest.mark.parametrize("name", list(SOURCES))
def test_jax_emitted_module_has_the_built_params(name):
    jax = pytest.importorskip("jax")
    np = pytest.importorskip("numpy")
    m = small(name)
    key = jax.random.PRNGKey(0)
    want = hybridc.build(m, backend="jax").init(key)
    got = emitted(m, "jax")["init"](key)
    assert sorted(got) == sorted(want)
    assert [k for k in want if not np.array_equal(np.asarray(got[k]), np.asarray(want[k]))] == []
