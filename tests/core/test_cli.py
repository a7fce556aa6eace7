"""The CLI: exit codes (0 ok, 1 invalid model, 2 usage), describe/json, fmt, schema, check, stdin."""
import json
import subprocess
import sys

import pytest
from hypothesis import given, settings, strategies as st

import hybridc
from hybridc.cli import main
from hybridc.ir import Model


def run(*args, stdin=None):
    p = subprocess.run([sys.executable, "-m", "hybridc.cli", *args], capture_output=True, text=True, input=stdin)
    return p.returncode, p.stdout, p.stderr


def test_describe_json(capsys):
    assert main(["describe", "examples/nemotron_h.hyb", "--json", "--context", "1000"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["num_backbone"] == 9 and d["num_attention"] == 1 and d["backbone_pct"] == 90.0 and d["mode"] == "interleaved"
    assert d["params"] == hybridc.describe(hybridc.load_file("examples/nemotron_h.hyb"))["params"]
    assert d["state_bytes"] < d["state_bytes_all_attention"] and d["flops_per_token"] > 0 and len(d["layers"]) == 10


def test_describe_table(capsys):
    assert main(["describe", "examples/headline.hyb", "--dtype", "bf16"]) == 0
    out = capsys.readouterr().out
    assert "mamba|attn" in out and "parameters" in out and "all-attention" in out


def test_describe_table_groups_layers_that_read_the_same(capsys):
    """Nemotron-H-8B's 52 layers are three rows (layers, count, kind, ...); the JSON keeps one entry per layer."""
    assert main(["describe", "examples/zoo/nemotron_h_8b.hyb"]) == 0
    rows = [l for l in capsys.readouterr().out.splitlines() if l.startswith("│") and l.split("│")[1].strip()]
    cells = [[c.strip() for c in r.split("│")[1:4]] for r in rows]
    assert cells == [["1, 3, …, 51", "24", "mamba2"], ["2, 4, …, 52", "24", "mlp"], ["8, 19, 30, 41", "4", "attn"]]
    assert main(["describe", "examples/jamba.hyb"]) == 0
    rows = [l for l in capsys.readouterr().out.splitlines() if l.startswith("│") and l.split("│")[1].strip()]
    assert [[c.strip() for c in r.split("│")[1:4]] for r in rows] == [["1-2, 4-5", "4", "mamba"], ["3, 6", "2", "attn"]]


def test_state_scales_with_context_and_window():
    m = hybridc.load("layers mamba attn(window=none) attn(window=8); meta_tokens 2")
    a, b = (hybridc.describe(m, context=c)["layers"] for c in (10, 20))
    assert a[0]["state_bytes"] == b[0]["state_bytes"]                       # recurrent: constant
    assert b[1]["state_bytes"] - a[1]["state_bytes"] == 10 * 2 * 4 * 64 * 4  # global: grows with context
    assert a[2]["state_bytes"] == b[2]["state_bytes"] == (8 + 2) * 2 * 4 * 64 * 4  # window-capped, meta kept
    assert hybridc.describe(m, context=10, dtype="bf16")["state_bytes"] * 2 == hybridc.describe(m, context=10)["state_bytes"]


def test_exit_codes_and_stderr():
    code, out, err = run("check", "-", stdin="layers mamab\n")
    assert code == 1 and "<stdin>:1:8: error: unknown layer kind 'mamab'" in err and "Traceback" not in err
    assert run("check", "-", stdin="6 layers\n")[0] == 0
    assert run("describe", "no_such_file.hyb")[0] == 2
    assert run("frobnicate")[0] == 2
    assert run("describe", "examples/nemotron_h.hyb", "--context", "x")[0] == 2


def test_check_reports_all_errors(tmp_path):
    bad = tmp_path / "bad.hyb"
    bad.write_text("mamba stat=3\nattn hedas=2\nfoo 1\n")
    code, _, err = run("check", str(bad))
    assert code == 1 and err.count("error:") == 3 and f"{bad}:2:6" in err


def test_fmt_round_trip(tmp_path):
    code, out, _ = run("fmt", "examples/every_feature.hyb")
    assert code == 0 and hybridc.load(out) == hybridc.load_file("examples/every_feature.hyb")


def test_schema():
    code, out, _ = run("schema")
    assert code == 0 and json.loads(out)["title"] == "Model"


def test_compile_unknown_backend():
    code, _, err = run("compile", "examples/nemotron_h.hyb", "--backend", "tpu9")
    assert code == 2 and "unknown backend" in err


def test_json_round_trip_of_ir():
    for name in ("every_feature", "headline", "zamba", "megatron_pattern"):
        m = hybridc.load_file(f"examples/{name}.hyb")
        assert Model.model_validate_json(m.model_dump_json()) == m


KINDS = ["mamba", "mamba2", "gru", "rwkv", "delta_net", "gated_delta_net", "griffin_lru", "attn", "mlp"]
OPTS = {"mamba": ["state=8", "expand=1", "conv=2"], "attn": ["window=none", "heads=2", "kv_heads=1", "rope=true", "qk_norm=false"],
        "gru": ["hidden=32"], "mlp": ["mult=2", "act=silu"], "mamba2": ["head_dim=32", "state=16"], "rwkv": ["head_dim=32"],
        "delta_net": ["heads=2"], "gated_delta_net": ["head_dim=32"], "griffin_lru": ["heads=2"]}


@st.composite
def programs(draw):
    items = []
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(KINDS))
        opts = draw(st.lists(st.sampled_from(OPTS[kind]), max_size=2, unique_by=lambda s: s.split("=")[0]))
        if kind not in ("attn", "mlp") and draw(st.booleans()):
            kind = kind + "|attn"
        rep = draw(st.sampled_from(["", " x2", " x3"]))
        items.append(kind + (f"({', '.join(opts)})" if opts and "|" not in kind else "") + rep)
    lines = ["dim 64", "layers " + " ".join(items)]
    lines += draw(st.lists(st.sampled_from(["meta_tokens 2", "fusion mean", "norm rms", "ffn after=all", "ffn mult=2 act=swiglu",
                                            "attn window=16", "mamba state=4", "at 1 ffn mult=3", "dropout 0.25"]),
                           max_size=4, unique=True))
    return "\n".join(lines)


@settings(max_examples=150, deadline=None)
@given(programs())
def test_dumps_round_trip_generated(text):
    try:
        m = hybridc.load(text)
    except hybridc.HybridcError:
        return
    assert hybridc.load(hybridc.dumps(m)) == m
