"""`hybridc plot` (curves, --summary) and `hybridc sweep` (a TOML grid, idempotent reruns, clear spec errors)."""
import json

import pytest

pytest.importorskip("matplotlib")

from hybridc.cli import main  # noqa: E402
from hybridc.train.sweep import parse_spec, with_name_dim  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"
ATTN = "dim {dim}\nlayers attn(heads=2, head_dim=8)\nvocab 32\noutput logits\n"


def _fake_run(folder, *, name="attn", dim=16, lr=1e-3, seed=0, accs=(0.1, 0.4, 0.7), seq_len=32):
    """A run folder as hybridc train writes it, with made-up metrics."""
    folder.mkdir(parents=True)
    text = f"model {name}\n" + ATTN.format(dim=dim)
    (folder / "run.json").write_text(json.dumps({
        "model": text, "task": "mqar", "task_options": {"vocab": 32, "seq_len": seq_len, "num_kv_pairs": 4},
        "options": {"lr": lr, "seed": seed, "steps": 30, "batch": 8, "backend": "torch"}}))
    rows = [{"step": 10 * (i + 1), "loss": 3.0 - i, "eval_loss": 3.1 - i, "accuracy": a, "tokens_per_s": 1e4,
             "time": float(i)} for i, a in enumerate(accs)]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def test_plot_writes_a_png_of_the_runs(tmp_path, capsys):
    a = _fake_run(tmp_path / "a")
    b = _fake_run(tmp_path / "b", lr=3e-3, accs=(0.2, 0.3, 0.9))
    out = tmp_path / "curves.png"
    assert main(["plot", str(a), str(b), "-o", str(out)]) == 0
    assert out.read_bytes()[:8] == PNG and out.stat().st_size > 10_000
    assert "2 runs" in capsys.readouterr().err


def test_plot_of_a_folder_of_runs_and_the_summary(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    for dim in (16, 32):
        for lr, top in ((1e-3, 0.5), (3e-3, 0.8)):
            for seed in (0, 1):
                _fake_run(sweep / f"attn-d{dim}-{lr}-{seed}", dim=dim, lr=lr, seed=seed,
                          accs=(0.1, top + 0.1 * seed, top - 0.2))
        _fake_run(sweep / f"small-d{dim}", name="small", dim=dim, accs=(0.05, 0.2))
    assert main(["plot", str(sweep), "-o", str(tmp_path / "all.png")]) == 0
    for x in ("dim", "state"):
        out = tmp_path / f"summary_{x}.png"
        assert main(["plot", "--summary", str(sweep), "--x", x, "-o", str(out)]) == 0
        assert out.read_bytes()[:8] == PNG
    table = capsys.readouterr().out.splitlines()
    # best lr 3e-3: each run's best accuracy (0.8, 0.9) averaged over the two seeds; state bytes from describe
    attn16 = next(line.split() for line in table if line.startswith("attn") and line.split()[1] == "16")
    assert attn16[4:] == ["0.003", "0.850"]
    assert attn16[3] == f"{2 * 2 * 8 * 32 * 4:,}"  # k and v, 2 heads x 8, 32 positions (seq_len), fp32


def test_plot_errors_exit_2(tmp_path, capsys):
    assert main(["plot", str(tmp_path / "missing"), "-o", str(tmp_path / "f.png")]) == 2
    assert "no such directory" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["plot", str(tmp_path / "empty"), "-o", str(tmp_path / "f.png")]) == 2
    assert "no runs here" in capsys.readouterr().err
    run = _fake_run(tmp_path / "r")
    (run / "metrics.jsonl").write_text("")
    assert main(["plot", str(run), "-o", str(tmp_path / "f.png")]) == 2
    assert "no metrics" in capsys.readouterr().err
    good = _fake_run(tmp_path / "g")
    assert main(["plot", str(good), "-o", str(tmp_path / "f.nosuchformat")]) == 2
    assert "-o" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:  # -o is required
        main(["plot", str(good)])
    assert e.value.code == 2


SPEC = """
out = "out"
backend = "torch"
steps = 4
batch = 4
lrs = [3e-3]
dims = [16]
eval_every = 2
eval_batches = 1

[task]
name = "mqar"
vocab = 32
seq_len = 16
num_kv_pairs = 2

[models]
attn = '''
model ignored
layers attn(heads=2, head_dim=8)
vocab 32
output logits
'''
gru = "gru.hyb"
"""


def _spec(tmp_path, text=SPEC):
    (tmp_path / "gru.hyb").write_text("dim 99; layers gru  # replaced by the sweep's dims\nvocab 32; output logits\n")
    (tmp_path / "spec.toml").write_text(text)
    return tmp_path / "spec.toml"


def test_sweep_runs_the_grid_and_skips_finished_runs_on_rerun(tmp_path, capsys):
    spec = _spec(tmp_path)
    assert main(["sweep", str(spec), "--quiet"]) == 0
    runs = sorted(p.name for p in (tmp_path / "out").iterdir() if p.is_dir())
    assert runs == ["attn-d16-lr0.003-s0", "gru-d16-lr0.003-s0"]
    for name in runs:
        record = json.loads((tmp_path / "out" / name / "run.json").read_text())
        assert record["model"].startswith(f"model {name.split('-')[0]}\ndim 16\n")
        assert record["options"]["lr"] == 3e-3 and record["task_options"]["seq_len"] == 16
        assert [r["step"] for r in map(json.loads, (tmp_path / "out" / name / "metrics.jsonl").open())] == [2, 4]
    before = {n: (tmp_path / "out" / n / "metrics.jsonl").read_text() for n in runs}
    capsys.readouterr()
    assert main(["sweep", str(spec), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert err.count("finished, skipped") == 2 and "0 trained" in err
    assert before == {n: (tmp_path / "out" / n / "metrics.jsonl").read_text() for n in runs}
    assert json.loads((tmp_path / "out" / "sweep.json").read_text())["runs"][1]["model"] == "gru"
    assert main(["plot", "--summary", str(tmp_path / "out"), "-o", str(tmp_path / "s.png")]) == 0


@pytest.mark.parametrize("edit, message", [
    (("lrs = [3e-3]", "lr = 3e-3"), "unknown key 'lr' (did you mean 'lrs'?)"),
    (("steps = 4", "steps = \"four\""), "steps must be an integer"),
    (("[task]", "[tasks]"), "unknown key 'tasks'"),
    (("name = \"mqar\"", "name = \"mqr\""), "unknown task 'mqr'"),
    (("num_kv_pairs = 2", "num_kv = 2"), "num_kv"),
    (("gru = \"gru.hyb\"", "gru = \"nope.hyb\""), "no such file"),
    (("gru = \"gru.hyb\"", "\"bad name\" = \"gru.hyb\""), "must be an identifier"),
    (("batch = 4", "batch = 0"), "batch must be >= 1"),
    (("steps = 4\n", ""), "missing steps"),
    (("lrs = [3e-3]", "lrs = []"), "lrs is empty"),
    (("out = \"out\"", "out = = 1"), "not valid TOML"),
])
def test_bad_specs_are_clear_usage_errors(tmp_path, capsys, edit, message):
    spec = _spec(tmp_path, SPEC.replace(*edit))
    assert main(["sweep", str(spec)]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # nothing ran


def test_a_model_that_does_not_fit_the_task_is_located_before_any_run(tmp_path, capsys):
    spec = _spec(tmp_path, SPEC.replace("vocab 32\noutput logits\n'''", "vocab 16\noutput logits\n'''"))
    assert main(["sweep", str(spec)]) == 1
    assert "vocab 16 is smaller" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    assert main(["sweep", str(tmp_path / "missing.toml")]) == 2


def test_dry_run_lists_the_grid(tmp_path, capsys):
    spec = _spec(tmp_path, SPEC.replace("lrs = [3e-3]", "lrs = [1e-3, 3e-3]\nseeds = [0, 1]").replace(
        "dims = [16]", "dims = [16, 32]"))
    assert main(["sweep", str(spec), "--dry-run"]) == 0
    assert "16 runs (16 to train" in capsys.readouterr().err
    settings, jobs, out = parse_spec(spec)
    assert out == tmp_path / "out" and settings["steps"] == 4
    assert jobs[0].name == "attn-d16-lr0.001-s0" and jobs[-1].name == "gru-d32-lr0.003-s1"


def test_with_name_dim_replaces_only_those_statements():
    text = "model a; dim 8; layers attn  # note\n\ndim 4\nvocab 32\n"
    assert with_name_dim(text, "b", 16) == "model b\ndim 16\nlayers attn # note\n\nvocab 32\n"
    assert with_name_dim("dim 8\nlayers gru\n", "c", None) == "model c\ndim 8\nlayers gru\n"
