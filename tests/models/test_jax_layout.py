"""The JAX backend's layout: one op folder per recurrence behind `hybridc_jax.ops`, one layer module per IR kind.

`hybridc_jax.ops` exposes the entry callables (six recurrences and the MoE's grouped matmul) and `OPS` (name ->
`Op`); each op folder declares its implementations once (an `Op` whose "module:function" entries resolve) with the
sequential reference first. Every IR kind has `hybridc_jax.layers.<kind>` with init / init_state / apply / step and
declares what it runs for ``describe --kernels``: `OP` (an op name) or `KERNEL` (a fixed (name, why)).
"""
from __future__ import annotations

import importlib

import pytest

from hybridc.kinds import NAMES as KINDS  # every IR kind (the registry is the one list)
from hybridc_native.choice import Op

pytest.importorskip("jax")

from hybridc_jax import ops  # noqa: E402

OP_NAMES = ["selective_scan", "ssd", "delta_rule", "gated_delta_rule", "rwkv7", "linear_recurrence",
            "grouped_matmul", "attention", "causal_conv1d", "rms_norm_gated"]


def test_ops_exposes_the_six_callables_and_their_ops():
    assert set(ops.OPS) == set(OP_NAMES)
    for name in OP_NAMES:
        entry = getattr(ops, name)
        assert callable(entry) and entry.__name__ == name, name
        assert entry is getattr(importlib.import_module(f"hybridc_jax.ops.{name}"), name)
        assert isinstance(ops.OPS[name], Op) and ops.OPS[name].name == name


@pytest.mark.parametrize("name", OP_NAMES)
def test_every_declared_impl_resolves(name):
    op = ops.OPS[name]
    assert list(op.impls)[0] == "reference"
    assert op.get("reference") is importlib.import_module(f"hybridc_jax.ops.{name}.naive").reference
    for impl, target in op.impls.items():
        module, _, attr = target.partition(":")
        assert module in ("naive", "chunk", "cpp", "pallas", "ragged", "tiled", "block", "xla"), (impl, target)
        # ragged/tiled: MoE's grouped matmul; block/xla: attention
        assert callable(op.get(impl)), (impl, target)
    assert op.auto("cpu") in op.impls and op.auto("gpu") in op.impls


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_has_a_layer_module_that_declares_what_it_runs(kind):
    from hybridc_jax.model import kind_module

    layer = kind_module(kind)
    assert layer.__name__ == f"hybridc_jax.layers.{kind}"
    for fn in ("init", "init_state", "apply", "step"):
        assert callable(getattr(layer, fn, None)), f"layers/{kind}.py has no {fn}"
    assert hasattr(layer, "OP") != hasattr(layer, "KERNEL"), f"layers/{kind}.py must declare exactly one of OP, KERNEL"
    if hasattr(layer, "OP"):
        assert layer.OP in ops.OPS, layer.OP
    else:
        name, why = layer.KERNEL
        assert (name is None or isinstance(name, str)) and isinstance(why, str) and why
