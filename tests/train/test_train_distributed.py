"""`torchrun --nproc_per_node 2 -m hybridc train ... --distributed ddp|fsdp` on CPU (gloo): 2 processes with the same
global batch give one process's losses (1e-5 over 20 steps), and a checkpoint written by 2 processes (DDP files, or
FSDP2's sharded torch.distributed.checkpoint) is resumed by 1 process to the uninterrupted run's metrics."""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("numpy")

import hybridc  # noqa: E402
from hybridc.cli import main  # noqa: E402
from hybridc.tasks import make_task  # noqa: E402
from hybridc.train.loop import TrainConfig, read_metrics, train  # noqa: E402

MODEL = "layers mamba attn(window=none, rope=true); dim 16; vocab 16; output logits; dropout 0; attn heads=2 head_dim=8"
TASK = {"vocab": 16, "seq_len": 16, "num_kv_pairs": 2}
CONFIG = {"steps": 20, "batch": 8, "lr": 3e-3, "eval_every": 1, "eval_batches": 1, "checkpoint_every": 10}
FLAGS = ["--task", "mqar", "--vocab", "16", "--seq-len", "16", "--kv-pairs", "2", "--steps", "20", "--batch", "8",
         "--lr", "3e-3", "--eval-every", "1", "--eval-batches", "1", "--checkpoint-every", "10", "--quiet"]
KEYS = ("step", "loss", "eval_loss", "accuracy")

# Run by torchrun in each of the 2 processes: a run killed before step 11 (its last checkpoint: step 10), as a kill
# would leave it.
WORKER = textwrap.dedent("""
    import sys
    import torch
    import torch.distributed as dist
    torch.set_num_threads(1)
    dist.init_process_group("gloo")  # the trainer leaves a group it did not create
    import hybridc
    from hybridc.tasks import make_task
    from hybridc.train.loop import TrainConfig, train
    from hybridc_torch import backend

    mode, model_path, killed = sys.argv[1:4]

    class Killed(Exception):
        pass

    def factory(model, **kw):
        tr = backend.trainer(model, **kw)
        real, count = tr.step, [0]
        def step(*args):
            count[0] += 1
            if count[0] == 11:
                raise Killed
            return real(*args)
        tr.step = step
        return tr

    model = hybridc.load(open(model_path).read())
    try:
        train(model, make_task("mqar", **%r), TrainConfig(**%r), killed, trainer_factory=factory, distributed=mode)
    except Killed:
        pass
    dist.destroy_process_group()
""" % (TASK, CONFIG))


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One process, the same global batch, uninterrupted."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("one")
    return out, train(hybridc.load(MODEL), make_task("mqar", **TASK), TrainConfig(**CONFIG), out)


def launch(mode: str, tmp: Path) -> tuple[Path, Path]:
    (tmp / "m.hyb").write_text(MODEL + "\n")
    (tmp / "worker.py").write_text(WORKER)
    full, killed = tmp / "full", tmp / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone"]
    for cmd in ([*torchrun, "-m", "hybridc", "train", str(tmp / "m.hyb"), *FLAGS, "--out", str(full),
                 "--distributed", mode],
                [*torchrun, str(tmp / "worker.py"), mode, str(tmp / "m.hyb"), str(killed)]):
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return full, killed


def close(rows, ref):
    assert [r["step"] for r in rows] == [r["step"] for r in ref] == list(range(1, 21))
    for r, e in zip(rows, ref):
        for k in KEYS:
            assert r[k] == pytest.approx(e[k], abs=1e-5, rel=1e-5), (r["step"], k, r[k], e[k])


@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_two_processes_equal_one_and_resume_in_one(mode, tmp_path, reference):
    ref_dir, reference = reference
    full, killed = launch(mode, tmp_path)
    # 2 processes, the same global batch: one process's losses, eval losses and accuracies
    close(read_metrics(full), reference)
    run = (full / "run.json").read_text()
    assert f'"mode": "{mode}"' in run and '"processes": 2' in run
    files = {p.name for p in (full / "checkpoint").iterdir()}
    if mode == "ddp":
        assert {"model.safetensors", "optimizer.pt", "rng.pt", "state.json"} <= files
    else:  # sharded: one file per rank, plus the full weights for hybridc / JAX
        assert {"dcp", "model.safetensors", "state.json"} <= files and "optimizer.pt" not in files
        assert len(list((full / "checkpoint" / "dcp").glob("*.distcp"))) == 2
    # the final weights file equals the one-process run's
    ref_weights = hybridc.load_weights("numpy", ref_dir / "checkpoint" / "model.safetensors")
    got = hybridc.load_weights("numpy", full / "checkpoint" / "model.safetensors")
    assert got.keys() == ref_weights.keys()
    for k in got:
        assert abs(got[k] - ref_weights[k]).max() < 1e-5, k
    # killed at step 10 on 2 processes, resumed by 1 (no --distributed): the uninterrupted run's metrics
    assert [r["step"] for r in read_metrics(killed)] == list(range(1, 11))
    assert main(["train", str(tmp_path / "m.hyb"), "--out", str(killed), "--resume", "--quiet"]) == 0
    close(read_metrics(killed), reference)


def test_distributed_bad_usage(tmp_path, capsys):
    f = tmp_path / "m.hyb"
    f.write_text(MODEL + "\n")
    env = {k: os.environ.pop(k) for k in ("RANK", "WORLD_SIZE") if k in os.environ}
    try:
        assert main(["train", str(f), *FLAGS, "--out", str(tmp_path / "a"), "--distributed", "ddp"]) == 2
        assert "torchrun --nproc_per_node" in capsys.readouterr().err and not (tmp_path / "a" / "run.json").exists()
        assert main(["train", str(f), *FLAGS, "--out", str(tmp_path / "b"), "--backend", "jax",
                     "--distributed", "fsdp"]) == 2
        assert "--distributed is for the torch backend" in capsys.readouterr().err
        os.environ["WORLD_SIZE"] = "2"  # torchrun's N processes without --distributed would all write DIR
        try:
            assert main(["train", str(f), *FLAGS, "--out", str(tmp_path / "c")]) == 2
        finally:
            del os.environ["WORLD_SIZE"]
        assert "add --distributed ddp or fsdp" in capsys.readouterr().err
    finally:
        os.environ.update(env)
