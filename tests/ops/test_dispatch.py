"""impl= / HYBRIDC_KERNEL / auto precedence, and `hybridc describe --kernels` (torch and JAX dispatch share the rules)."""
from __future__ import annotations

import json

import pytest
import torch

from hybridc_native import choice as jax_dispatch  # the rules the JAX entry points' Ops resolve by
from hybridc_native import choice as torch_dispatch  # the torch ops' `Op`s resolve through these rules
from hybridc_torch.ops import OPS, rwkv7

IMPLS = {"reference": "R", "chunk": "C", "cpp": "P"}


@pytest.fixture(params=[torch_dispatch, jax_dispatch], ids=["torch", "jax"])
def dispatch(request):
    return request.param


@pytest.mark.parametrize("env, impl, expect", [
    ("", "auto", ("chunk", "auto")),
    ("", "reference", ("reference", "impl=")),
    ("reference", "auto", ("reference", "HYBRIDC_KERNEL")),
    ("reference", "cpp", ("cpp", "impl=")),                       # an explicit impl= wins over the environment
    ("triton", "auto", ("chunk", "auto")),                        # a bare name this op lacks leaves it on auto
    ("ssd=reference", "auto", ("chunk", "auto")),                 # another op's entry
    ("op=cpp", "auto", ("cpp", "HYBRIDC_KERNEL")),
    ("reference, op=cpp", "auto", ("cpp", "HYBRIDC_KERNEL")),     # the op's own entry beats the bare name
    ("op=auto", "auto", ("chunk", "auto")),
], ids=["auto", "explicit", "env-bare", "explicit-beats-env", "bare-missing", "other-op", "env-op", "op-beats-bare",
        "env-op-auto"])
def test_precedence(dispatch, monkeypatch, env, impl, expect):
    monkeypatch.setenv("HYBRIDC_KERNEL", env)
    assert dispatch.resolve("op", IMPLS, impl, "chunk") == expect
    assert dispatch.choose("op", IMPLS, impl, "chunk") == IMPLS[expect[0]]


@pytest.mark.parametrize("env, impl, needle", [
    ("", "trition", "unknown op impl 'trition' (from impl=)"),
    ("op=triton", "auto", "unknown op impl 'triton' (from HYBRIDC_KERNEL)"),  # op=name is strict
    ("refrence", "auto", "unknown kernel 'refrence'"),                         # a typo in the bare name
], ids=["bad-impl", "strict-op-entry", "bare-typo"])
def test_errors_name_the_choices(dispatch, monkeypatch, env, impl, needle):
    monkeypatch.setenv("HYBRIDC_KERNEL", env)
    with pytest.raises(ValueError, match="valid") as e:
        dispatch.resolve("op", IMPLS, impl, "chunk")
    assert needle in str(e.value)


def test_env_reaches_a_real_kernel(monkeypatch):
    """HYBRIDC_KERNEL=rwkv7=reference routes the entry point to the sequential reference."""
    calls = []
    monkeypatch.setitem(OPS["rwkv7"]._loaded, "reference", lambda *a, **k: calls.append("ref") or (a[0], None))
    x = torch.zeros(1, 3, 1, 4)
    monkeypatch.setenv("HYBRIDC_KERNEL", "rwkv7=reference")
    rwkv7(x, x, x, x, x, x)
    assert calls == ["ref"]
    monkeypatch.setenv("HYBRIDC_KERNEL", "")
    rwkv7(x, x, x, x, x, x)
    assert calls == ["ref"]                                       # auto: the chunked form


def test_describe_kernels_json(capsys):
    from hybridc.cli import main

    assert main(["describe", "examples/recurrent_mix.hyb", "--kernels", "--json"]) == 0
    plans = json.loads(capsys.readouterr().out)["kernels"]
    assert set(plans) == {"torch", "jax"}
    rows = {r["kind"]: r for r in plans["torch"]}
    assert rows["mamba"]["op"] == "selective_scan" and rows["mamba"]["layers"] == [0]
    assert rows["griffin_lru"]["op"] == "linear_recurrence"
    assert set(rows["mamba"]["impl"]) == {"cpu", "cuda"}
    assert rows["attn"]["impl"]["cpu"] == "sdpa" and rows["mlp"]["op"] == "-"
    assert {r["kind"] for r in plans["jax"]} == set(rows)
    assert set(plans["jax"][0]["impl"]) == {"cpu", "gpu"}


def test_describe_kernels_env_and_table(capsys, monkeypatch):
    from hybridc.cli import main

    monkeypatch.setenv("HYBRIDC_KERNEL", "reference")
    assert main(["describe", "examples/recurrent_mix.hyb", "--kernels", "--json"]) == 0
    plans = json.loads(capsys.readouterr().out)["kernels"]
    for backend in plans.values():
        for row in backend:
            if row["op"] not in ("-", "sdpa", "xla", "torch.gru", "lax.scan"):
                assert set(row["impl"].values()) == {"reference"}, row
    assert main(["describe", "examples/recurrent_mix.hyb", "--kernels"]) == 0
    out = capsys.readouterr().out
    assert "torch cuda" in out and "jax gpu" in out and "selective_scan" in out


def test_describe_kernels_bad_env_is_usage_error(capsys, monkeypatch):
    from hybridc.cli import main

    monkeypatch.setenv("HYBRIDC_KERNEL", "fastest")
    assert main(["describe", "examples/recurrent_mix.hyb", "--kernels"]) == 2
    assert "unknown kernel 'fastest'" in capsys.readouterr().err
