"""`hybridc train` on the torch backend: a tiny MQAR model learns, a killed run resumes to the same metrics, a crash
while saving leaves a loadable checkpoint, and bad input is refused before training (exit 1/2, no traceback)."""
import json
import os

import pytest

torch = pytest.importorskip("torch")
np = pytest.importorskip("numpy")

import hybridc  # noqa: E402
from hybridc.cli import main  # noqa: E402
from hybridc.tasks import make_task  # noqa: E402
from hybridc.train import loop  # noqa: E402
from hybridc.train.loop import TrainConfig, latest_checkpoint, lr_at, read_metrics, train  # noqa: E402
from hybridc_torch.train import trainer as torch_trainer  # noqa: E402

ATTN2 = "layers attn(window=none, rope=true) x2; dim 64; vocab 32; output logits; dropout 0; attn heads=1 head_dim=64"
TINY = "layers mamba attn(window=none, rope=true); dim 16; vocab 16; output logits; attn heads=2 head_dim=8"  # dropout 0.1


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: the same numbers on every machine, and no oversubscription on a shared 2-core runner."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def tiny_task():
    return make_task("mqar", vocab=16, seq_len=16, num_kv_pairs=2)


def test_lr_schedule():
    lrs = [lr_at(s, lr=1.0, warmup=10, steps=110) for s in range(110)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == 1.0 and lrs[10] == 1.0
    assert lrs[60] == pytest.approx(0.5) and 0 < lrs[-1] < 1e-3
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))


def test_mqar_accuracy_rises_from_chance(tmp_path):
    """2 attention layers on MQAR (V=32: values from 16 of them, chance 1/16; L=32, 4 pairs) in 150 steps."""
    model, task = hybridc.load(ATTN2), make_task("mqar", vocab=32, seq_len=32, num_kv_pairs=4)
    untrained = torch_trainer(model, lr=3e-3, warmup=15, steps=150, weight_decay=0.1, seed=0)
    x, y = task.batch(np.random.default_rng(1), 256)
    before = untrained.evaluate(x, y)["accuracy"]
    rows = train(model, task, TrainConfig(steps=150, batch=64, lr=3e-3, eval_every=50), tmp_path)
    acc = [r["accuracy"] for r in rows]
    assert [r["step"] for r in rows] == [50, 100, 150]
    assert before < 0.15  # chance: 1/16
    assert acc[-1] > 0.9, acc
    assert rows[-1]["loss"] < rows[0]["loss"] / 3
    assert set(rows[0]) == {"step", "loss", "eval_loss", "accuracy", "tokens_per_s", "time"}
    assert read_metrics(tmp_path) == rows
    run = json.loads((tmp_path / "run.json").read_text())
    assert hybridc.load(run["model"]) == model and run["task"] == "mqar" and run["options"]["lr"] == 3e-3
    weights = hybridc.load_weights("numpy", tmp_path / "checkpoint" / "model.safetensors")
    assert "embed.weight" in weights


class Killed(Exception):
    pass


def killing(at_step: int):
    """A trainer factory whose trainer dies before its step `at_step` (1-based), as a kill would."""
    def factory(model, **kw):
        tr = torch_trainer(model, **kw)
        real, count = tr.step, [0]

        def step(*args):
            count[0] += 1
            if count[0] == at_step:
                raise Killed
            return real(*args)

        tr.step = step
        return tr
    return factory


def test_resume_gives_the_same_metrics(tmp_path):
    """2K steps straight vs killed after step K+1 (checkpoint at K, a metrics line past it) and resumed by the CLI."""
    model, task = hybridc.load(TINY), tiny_task()
    config = TrainConfig(steps=16, batch=8, lr=1e-2, eval_every=2, checkpoint_every=8, eval_batches=2)
    straight = train(model, task, config, tmp_path / "a")
    with pytest.raises(Killed):
        train(model, task, config, tmp_path / "b", trainer_factory=killing(11))
    assert [r["step"] for r in read_metrics(tmp_path / "b")][-1] == 10  # past the checkpoint: dropped on resume
    assert json.loads((tmp_path / "b" / "checkpoint" / "state.json").read_text())["step"] == 8
    (tmp_path / "m.hyb").write_text(TINY)
    assert main(["train", str(tmp_path / "m.hyb"), "--out", str(tmp_path / "b"), "--resume", "--quiet"]) == 0
    resumed = read_metrics(tmp_path / "b")
    assert [r["step"] for r in resumed] == [r["step"] for r in straight] == list(range(2, 17, 2))
    for key in ("loss", "eval_loss", "accuracy"):
        assert [r[key] for r in resumed] == pytest.approx([r[key] for r in straight], abs=1e-6, rel=0), key


def test_crash_while_saving_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    model, task = hybridc.load(TINY), tiny_task()
    config = TrainConfig(steps=8, batch=4, lr=1e-2, eval_every=4, checkpoint_every=4, eval_batches=1)

    def dies(factory, when):
        def make(model, **kw):
            tr = factory(model, **kw)
            real = tr.save

            def save(d):
                if when(d):
                    (d / "model.safetensors").write_bytes(b"torn")  # a half-written file, then the kill
                    raise Killed
                real(d)
            tr.save = save
            return tr
        return make

    calls = []
    with pytest.raises(Killed):  # the second save (step 8) dies mid-way
        train(model, task, config, tmp_path, trainer_factory=dies(torch_trainer, lambda d: calls.append(d) or
                                                                   len(calls) == 2))
    ckpt = latest_checkpoint(tmp_path)
    assert ckpt == tmp_path / "checkpoint" and json.loads((ckpt / "state.json").read_text())["step"] == 4
    fresh = torch_trainer(model, lr=1e-2, warmup=0, steps=8, weight_decay=0.1, seed=1)
    fresh.load(ckpt)  # loads: the torn file never replaced the checkpoint

    real_replace, n = os.replace, []

    def replace(src, dst):  # die between the swap's two renames (checkpoint -> .old done, .tmp -> checkpoint not)
        if str(src).endswith("checkpoint.tmp"):
            raise Killed
        n.append(dst)
        real_replace(src, dst)

    monkeypatch.setattr(loop.os, "replace", replace)
    with pytest.raises(Killed):
        train(model, task, config, tmp_path, resume=True)
    monkeypatch.setattr(loop.os, "replace", real_replace)
    assert not (tmp_path / "checkpoint").exists()
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoint.old"
    rows = train(model, task, config, tmp_path, resume=True)  # resumes from the .old one
    assert rows[-1]["step"] == 8 and latest_checkpoint(tmp_path) == tmp_path / "checkpoint"
    assert not (tmp_path / "checkpoint.old").exists() and not (tmp_path / "checkpoint.tmp").exists()


def cli(tmp_path, capsys, model_text, *args):
    (tmp_path / "m.hyb").write_text(model_text)
    code = main(["train", str(tmp_path / "m.hyb"), "--steps", "2", "--batch", "2", "--lr", "1e-3", "--quiet", *args])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


@pytest.mark.parametrize("model_text, args, code, words", [
    (TINY, ["--task", "mqqar"], 2, ["unknown task 'mqqar'", "did you mean 'mqar'"]),
    (TINY, ["--task", "mqar", "--task-option", "pairs=3"], 2, ["no option 'pairs'", "num_kv_pairs"]),
    (TINY, ["--task", "mqar", "--steps", "0"], 2, ["--steps must be >= 1"]),
    ("layers attn mamba\ndim 16\ninput 32\n", ["--task", "mqar"], 1, ["m.hyb:3:1", "input 32", "vocab 8192"]),
    ("layers attn; dim 16\nvocab 16; output logits\n", ["--task", "mqar", "--vocab", "32", "--kv-pairs", "2"], 1,
     ["m.hyb:2:1", "vocab 16 is smaller", "32"]),
    ("layers attn; dim 16; vocab 16\n", ["--task", "mqar", "--vocab", "16", "--kv-pairs", "2"], 1, ["output logits"]),
], ids=["unknown-task", "unknown-option", "bad-steps", "input-model", "small-vocab", "no-logits"])
def test_bad_input_is_refused_before_training(tmp_path, capsys, model_text, args, code, words):
    got, err = cli(tmp_path, capsys, model_text, "--out", str(tmp_path / "run"), *args)
    assert got == code, err
    for w in words:
        assert w in err, err
    assert not (tmp_path / "run").exists()


def test_resume_refuses_another_model_or_options(tmp_path, capsys):
    task = ["--task", "mqar", "--vocab", "16", "--seq-len", "16", "--kv-pairs", "2", "--out", str(tmp_path / "run")]
    assert cli(tmp_path, capsys, TINY, *task)[0] == 0
    code, err = cli(tmp_path, capsys, TINY, *task)
    assert code == 2 and "already holds a run" in err
    code, err = cli(tmp_path, capsys, TINY.replace("dim 16", "dim 24"), *task, "--resume")
    assert code == 1 and "model differs" in err
    code, err = cli(tmp_path, capsys, TINY, *task, "--resume", "--lr", "0.5")
    assert code == 2 and "--lr 0.5 (saved 0.001)" in err
    code, err = cli(tmp_path, capsys, TINY, *task, "--resume", "--seq-len", "32")
    assert code == 2 and "seq_len=32 (saved 16)" in err


def test_moe_aux_losses_join_the_training_loss():
    model = hybridc.load("layers attn mamba; moe every=1 experts=4 top_k=2 hidden=16; dim 16; vocab 16; output logits")
    tr = torch_trainer(model, lr=1e-2, warmup=0, steps=4, weight_decay=0.1, seed=0)
    x, y = tiny_task().batch(np.random.default_rng(0), 4)
    out = tr.step(x, y, 1e-2)
    aux = tr.net.aux_losses()
    assert aux is not None and set(aux) == set(loop.AUX_WEIGHTS)
    assert out["aux_loss"] == pytest.approx(sum(loop.AUX_WEIGHTS[k] * float(v.detach()) for k, v in aux.items()), rel=1e-6)
    dense = torch_trainer(hybridc.load(TINY), lr=1e-2, warmup=0, steps=4, weight_decay=0.1, seed=0)
    assert "aux_loss" not in dense.step(x, y, 1e-2)


def test_ctrl_c_points_at_the_checkpoint(tmp_path, capsys, monkeypatch):
    from hybridc_torch.train import TorchTrainer

    real, count = TorchTrainer.step, [0]

    def step(self, *args):
        count[0] += 1
        if count[0] == 4:
            raise KeyboardInterrupt
        return real(self, *args)

    monkeypatch.setattr(TorchTrainer, "step", step)
    task = ["--task", "mqar", "--vocab", "16", "--seq-len", "16", "--kv-pairs", "2", "--out", str(tmp_path / "run")]
    code, err = cli(tmp_path, capsys, TINY, *task, "--steps", "6", "--checkpoint-every", "2")
    assert code == 130 and "interrupted: the last checkpoint is" in err and "--resume" in err
    assert json.loads((tmp_path / "run" / "checkpoint" / "state.json").read_text())["step"] == 2
