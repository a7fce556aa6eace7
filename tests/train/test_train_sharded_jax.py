"""`hybridc train --backend jax --devices N` (backends/hybridc_jax/sharding.py) on 2 host devices: the same losses as
one device with the same global batch, parameters really sharded, checkpoints crossing between 2 devices and 1.

XLA_FLAGS=--xla_force_host_platform_device_count=2 must be set before jax is imported, so the runs are subprocesses."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytest.importorskip("jax")
pytest.importorskip("optax")

from hybridc.cli import main  # noqa: E402

MODEL = "dim 64\nlayers attn x2\nvocab 32\noutput logits\ndropout 0"
ENV = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}

SCRIPT = textwrap.dedent(f"""
    import json, sys, tempfile
    import numpy as np
    import hybridc
    from hybridc.tasks.mqar import MQAR
    from hybridc_jax import backend

    m = hybridc.load({MODEL!r})
    task = MQAR(vocab=32, seq_len=32, num_kv_pairs=4)
    kw = dict(lr=3e-3, warmup=5, steps=20, weight_decay=0.1, seed=0)
    rng = np.random.default_rng(0)
    batches = [task.batch(rng, 8) for _ in range(20)]
    rates = [3e-3 * min(1.0, (i + 1) / 5) for i in range(20)]

    def run(tr, start=0):
        return [tr.step(x, y, lr)["loss"] for (x, y), lr in zip(batches[start:], rates[start:])]

    one, two = backend.trainer(m, **kw), backend.trainer(m, devices=2, **kw)
    w = two.params["layers.0.ffn.up.weight"]
    out = {{"devices": len(w.sharding.device_set), "spec": str(w.sharding.spec),
            "shard": list(w.addressable_shards[0].data.shape), "shape": list(w.shape),
            "mu_spec": str(two.opt_state[1].inner_state[0].mu["layers.0.ffn.up.weight"].sharding.spec)}}
    one_a, two_a = run(one, 0)[:10], run(two, 0)[:10]
    d1, d2 = tempfile.mkdtemp(), tempfile.mkdtemp()
    one.save(d1); two.save(d2)
    out["one"] = one_a + run(one, 10)
    out["two"] = two_a + run(two, 10)
    resumed_on_one = backend.trainer(m, **kw); resumed_on_one.load(d2)  # written by 2 devices, resumed by 1
    resumed_on_two = backend.trainer(m, devices=2, **kw); resumed_on_two.load(d1)  # and the other way round
    out["two_to_one"] = run(resumed_on_one, 10)
    out["one_to_two"] = run(resumed_on_two, 10)
    out["eval"] = [t.evaluate(*batches[0]) for t in (one, two)]
    print(json.dumps(out))
""")


@pytest.fixture(scope="module")
def runs():
    p = subprocess.run([sys.executable, "-c", SCRIPT], env=ENV, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


def test_two_devices_take_the_same_steps_as_one(runs):
    assert len(runs["one"]) == len(runs["two"]) == 20
    np.testing.assert_allclose(runs["two"], runs["one"], rtol=0, atol=1e-5)
    assert runs["one"][-1] < runs["one"][0]
    e1, e2 = runs["eval"]
    assert abs(e1["eval_loss"] - e2["eval_loss"]) < 1e-5 and e1["accuracy"] == e2["accuracy"]


def test_parameters_and_optimizer_state_are_sharded(runs):
    assert runs["devices"] == 2
    assert runs["shape"] == [256, 64] and runs["shard"] == [128, 64]  # the largest dimension split in two
    assert "fsdp" in runs["spec"] and runs["mu_spec"] == runs["spec"]


def test_checkpoints_cross_between_two_devices_and_one(runs):
    np.testing.assert_allclose(runs["two_to_one"], runs["one"][10:], rtol=0, atol=1e-5)
    np.testing.assert_allclose(runs["one_to_two"], runs["one"][10:], rtol=0, atol=1e-5)


def test_cli_devices_run_equals_a_one_device_run(tmp_path):
    """`hybridc train --devices 2` through the loop (metrics, checkpoint) equals the plain in-process run."""
    (tmp_path / "m.hyb").write_text(MODEL)
    args = ["train", str(tmp_path / "m.hyb"), "--task", "mqar", "--vocab", "32", "--seq-len", "32", "--kv-pairs", "4",
            "--backend", "jax", "--steps", "6", "--batch", "8", "--lr", "3e-3", "--eval-every", "2",
            "--checkpoint-every", "3", "--quiet"]
    p = subprocess.run([sys.executable, "-m", "hybridc", *args, "--devices", "2", "--out", str(tmp_path / "two")],
                       env=ENV, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    rows = [[json.loads(line) for line in (tmp_path / d / "metrics.jsonl").read_text().splitlines()]
            for d in ("two", "one")]
    for key in ("loss", "eval_loss", "accuracy"):
        np.testing.assert_allclose([r[key] for r in rows[0]], [r[key] for r in rows[1]], rtol=0, atol=1e-5)
    assert (tmp_path / "two" / "checkpoint" / "model.safetensors").is_file()
    record = json.loads((tmp_path / "two" / "run.json").read_text())
    assert record["mesh"] == {"data": 1, "fsdp": 2}  # the mesh it ran on
    assert "mesh" not in json.loads((tmp_path / "one" / "run.json").read_text())


@pytest.mark.parametrize("extra, message", [
    (["--backend", "torch", "--devices", "2"], "--devices is for the jax backend"),
    (["--backend", "jax", "--devices", "3"], "divide --batch 8"),
])
def test_devices_usage_errors(tmp_path, capsys, extra, message):
    (tmp_path / "m.hyb").write_text(MODEL)
    code = main(["train", str(tmp_path / "m.hyb"), "--task", "mqar", "--vocab", "32", "--seq-len", "32",
                 "--kv-pairs", "4", "--steps", "2", "--batch", "8", "--lr", "1e-3", "--quiet",
                 "--out", str(tmp_path / "r"), *extra])
    assert code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "r" / "run.json").exists()


def test_more_devices_than_there_are_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "m.hyb").write_text(MODEL)
    code = main(["train", str(tmp_path / "m.hyb"), "--task", "mqar", "--vocab", "32", "--seq-len", "32",
                 "--kv-pairs", "4", "--steps", "2", "--batch", "4096", "--lr", "1e-3", "--quiet", "--backend", "jax",
                 "--devices", "4096", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 1 and "--devices 4096" in err and "available" in err and "Traceback" not in err
    assert not (tmp_path / "r" / "run.json").exists()
