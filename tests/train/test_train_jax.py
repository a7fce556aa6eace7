"""The JAX trainer (backends/hybridc_jax/train.py): MQAR is learned, checkpoints cross to torch and back, resume
repeats an uninterrupted run, and the optax AdamW takes the same steps as the torch trainer's."""
import json

import numpy as np
import pytest

pytest.importorskip("jax")
pytest.importorskip("optax")

import hybridc  # noqa: E402
from hybridc.tasks.mqar import MQAR  # noqa: E402
from hybridc.train import TrainConfig, train  # noqa: E402

MODEL = "dim 64\nlayers attn x2\nvocab 32\noutput logits\ndropout 0"
CONFIG = dict(batch=32, lr=3e-3, backend="jax", warmup=20, eval_every=50)


def _task():
    return MQAR(vocab=32, seq_len=32, num_kv_pairs=4)  # values from 16 of 32 tokens: chance 1/16


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("jax_mqar")
    rows = train(hybridc.load(MODEL), _task(), TrainConfig(steps=150, **CONFIG), out)
    return out, rows


def test_mqar_accuracy_rises_well_above_chance(run):
    out, rows = run
    first, last = rows[0], rows[-1]
    assert last["step"] == 150 and last["loss"] < first["loss"]
    assert last["accuracy"] > 0.3, rows  # ~0.48 after 150 steps; chance 1/16
    assert last["accuracy"] > first["accuracy"] + 0.1
    assert json.loads((out / "run.json").read_text())["options"]["backend"] == "jax"


def _batch(seed=1):
    return _task().batch(np.random.default_rng(seed), 4)


def test_jax_checkpoint_loads_into_torch(run):
    import jax.numpy as jnp
    import torch

    out, _ = run
    path = out / "checkpoint" / "model.safetensors"
    m = hybridc.load(MODEL)
    net = hybridc.build(m, backend="jax")
    x, _ = _batch()
    want = np.asarray(net.apply(hybridc.load_weights(net, path), jnp.asarray(x, jnp.int32)))
    module = hybridc.load_weights(hybridc.build(m, backend="torch").eval(), path)
    with torch.no_grad():
        got = module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)


def test_torch_trainer_weights_load_into_jax_and_adamw_steps_agree(tmp_path):
    """Start both trainers from the same (torch-initialised) weights: three AdamW steps give the same losses and
    weights (optax.adamw with the loop's rate, weight decay on matrices only, global-norm clipping)."""
    import jax
    from hybridc_jax import backend as jax_backend
    from hybridc_torch import backend as torch_backend

    m = hybridc.load(MODEL)
    opts = dict(lr=3e-3, warmup=0, steps=3, weight_decay=0.1, seed=0, betas=(0.9, 0.95), grad_clip=1.0)
    tt, tj = torch_backend.trainer(m, **opts), jax_backend.trainer(m, **opts)
    hybridc.save_weights(tt.net, tmp_path / "w.safetensors")
    tj.params = hybridc.load_weights(tj.net, tmp_path / "w.safetensors")
    x, y = _task().batch(np.random.default_rng(2), 32)
    for lr in (1e-2, 5e-3, 2e-3):
        lt, lj = tt.step(x, y, lr)["loss"], tj.step(x, y, lr)["loss"]
        assert lj == pytest.approx(lt, rel=1e-4, abs=1e-5)
    tw = {k: v.detach().numpy() for k, v in tt.net.named_parameters()}
    for k, v in jax.device_get(tj.params).items():
        np.testing.assert_allclose(np.asarray(v), tw[k], atol=2e-4, err_msg=k)
    assert tj.evaluate(x, y)["accuracy"] == pytest.approx(tt.evaluate(x, y)["accuracy"], abs=1 / 128)


class _Killed(Exception):
    pass


def test_resume_after_a_kill_gives_the_same_metrics(tmp_path):
    from hybridc_jax import backend

    m, cfg = hybridc.load(MODEL), TrainConfig(steps=8, checkpoint_every=4, **{**CONFIG, "eval_every": 2, "warmup": 2})
    whole = train(m, _task(), cfg, tmp_path / "whole")

    def dies_at_step_6(model, **kw):
        tr = backend.trainer(model, **kw)
        step, calls = tr.step, []

        def counted(*a):
            calls.append(1)
            if len(calls) == 6:
                raise _Killed
            return step(*a)

        tr.step = counted
        return tr

    with pytest.raises(_Killed):
        train(m, _task(), cfg, tmp_path / "cut", trainer_factory=dies_at_step_6)
    resumed = train(m, _task(), cfg, tmp_path / "cut", resume=True)
    keys = ("step", "loss", "eval_loss", "accuracy")
    assert [[r[k] for k in keys] for r in resumed] == [[r[k] for k in keys] for r in whole]


def test_optimizer_state_mismatch_is_a_clear_error(tmp_path, run):
    from hybridc_jax import backend

    out, _ = run
    other = backend.trainer(hybridc.load("dim 32\nlayers attn\nvocab 32\noutput logits"), lr=1e-3, warmup=0,
                            steps=1, weight_decay=0.0, seed=0)
    with pytest.raises(hybridc.HybridcError, match="weight|match"):
        other.load(out / "checkpoint")


def test_moe_aux_losses_join_the_loss_as_in_torch(tmp_path):
    """A model with MoE layers: the JAX step reports the same cross-entropy and aux loss as the torch step."""
    from hybridc_jax import backend as jax_backend
    from hybridc_torch import backend as torch_backend

    m = hybridc.load("dim 32\nlayers attn(heads=2, head_dim=16) x2\nmoe every=2 offset=1 experts=4 top_k=2 hidden=24\n"
                     "vocab 32\noutput logits\ndropout 0")
    opts = dict(lr=1e-3, warmup=0, steps=1, weight_decay=0.1, seed=0)
    tt, tj = torch_backend.trainer(m, **opts), jax_backend.trainer(m, **opts)
    hybridc.save_weights(tt.net, tmp_path / "w.safetensors")
    tj.params = hybridc.load_weights(tj.net, tmp_path / "w.safetensors")
    x, y = _task().batch(np.random.default_rng(3), 4)
    rt, rj = tt.step(x, y, 1e-3), tj.step(x, y, 1e-3)
    assert rj["aux_loss"] > 0
    assert rj["loss"] == pytest.approx(rt["loss"], rel=1e-5)
    assert rj["aux_loss"] == pytest.approx(rt["aux_loss"], rel=1e-4)


def test_runs_of_one_model_share_the_compiled_step():
    """A sweep's learning rates and seeds (the rate is an input of the step) reuse one compilation."""
    from hybridc_jax import backend

    m = hybridc.load(MODEL)
    a = backend.trainer(m, lr=1e-3, warmup=0, steps=10, weight_decay=0.1, seed=0)
    b = backend.trainer(m, lr=3e-3, warmup=5, steps=20, weight_decay=0.1, seed=1)
    assert a.fns is b.fns
    assert backend.trainer(m, lr=1e-3, warmup=0, steps=10, weight_decay=0.0, seed=0).fns is not a.fns
