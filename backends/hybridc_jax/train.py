"""JAX side of `hybridc train`: optax AdamW, a jitted step, evaluation, checkpoints (the backend trainer protocol).

    tr = backend.trainer(model_ir, lr=3e-3, warmup=50, steps=1000, weight_decay=0.1, seed=0)
    m = tr.step(inputs, labels, lr)          # numpy int64 (B, L); labels -100 where not scored -> {"loss": ...}
    e = tr.evaluate(inputs, labels)          # {"eval_loss": ..., "accuracy": ...}
    tr.save(dir); tr.load(dir)               # model.safetensors (hybridc.save_weights format), optimizer.safetensors

The framework-agnostic loop (`hybridc/train/loop.py`) owns the schedule and hands this trainer the learning rate of
each step; optax's `inject_hyperparams` makes that rate an input of the compiled step, so changing it never
recompiles. Weights carry the torch backend's names and shapes, so a JAX checkpoint loads into torch and back.
"""
from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from hybridc.errors import HybridcError

WEIGHTS, OPTIMIZER = "model.safetensors", "optimizer.safetensors"
EPS = 1e-8  # torch.optim.AdamW's default, so the backends take the same steps


def _decays(params: dict) -> dict:
    """Weight decay on matrices only (embeddings, projections), not on biases, norm gains or 1-d SSM parameters
    (nanoGPT's and the torch trainer's rule)."""
    return {k: v.ndim >= 2 for k, v in params.items()}


def masked_loss(logits, labels):
    """Mean cross-entropy and number of correct argmax predictions over positions with label != -100."""
    mask = labels != -100  # (B, L)
    safe = jnp.where(mask, labels, 0)
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)  # (B, L, V)
    nll = -jnp.take_along_axis(logp, safe[..., None], axis=-1)[..., 0]  # (B, L)
    n = jnp.maximum(mask.sum(), 1)
    correct = ((jnp.argmax(logits, -1) == safe) & mask).sum()
    return (nll * mask).sum() / n, correct, mask.sum()


def _split_aux(out):
    """`apply(..., return_aux=True)` -> (logits, weighted aux loss, the raw aux dict): MoE layers give unweighted
    {"load_balance", "z_loss"} (None without MoE); the training loss adds them with `loop.AUX_WEIGHTS`, as torch."""
    from hybridc.train.loop import AUX_WEIGHTS

    if isinstance(out, tuple):
        y, aux = out
        if aux:
            return y, sum(AUX_WEIGHTS.get(k, 0.01) * v for k, v in aux.items()), aux
        return y, jnp.zeros(()), None
    return out, jnp.zeros(()), None


class _Compiled:
    """The model's pure functions, the optimizer and the jitted step/eval for one (model, optimizer settings):
    shared by every trainer of that pair in a process (a sweep's seeds and learning rates compile once)."""

    def __init__(self, net, betas, weight_decay, grad_clip):
        self.net = net
        shapes = jax.eval_shape(self.net.init, jax.random.PRNGKey(0))
        adamw = optax.inject_hyperparams(optax.adamw)(learning_rate=0.0, b1=betas[0], b2=betas[1], eps=EPS,
                                                      weight_decay=weight_decay, mask=_decays(shapes))
        clip = optax.clip_by_global_norm(grad_clip) if grad_clip else optax.identity()
        self.tx = optax.chain(clip, adamw)
        self.step = jax.jit(self._train_step, donate_argnums=(0, 1))
        self.eval = jax.jit(self._eval_step)

    def _loss(self, params, x, labels, key):
        y, aux, parts = _split_aux(self.net.apply(params, x, key=key, train=True, return_aux=True))
        ce, _, _ = masked_loss(y, labels)
        return ce + aux, (ce, aux, parts)

    def _train_step(self, params, opt_state, key, x, labels, lr):
        key, sub = jax.random.split(key)
        (_, (ce, aux, parts)), grads = jax.value_and_grad(self._loss, has_aux=True)(params, x, labels, sub)
        clip_state, inner = opt_state
        inner = inner._replace(hyperparams={**inner.hyperparams, "learning_rate": lr})  # the loop's rate
        updates, opt_state = self.tx.update(grads, (clip_state, inner), params)
        params = optax.apply_updates(params, updates)
        return params, opt_state, key, {"ce": ce, "aux": aux, "grad_norm": optax.tree.norm(grads), "parts": parts}

    def _eval_step(self, params, x, labels):
        y, _, _ = _split_aux(self.net.apply(params, x))
        return masked_loss(y, labels)


_CACHE: dict = {}


def _compiled(model_ir, build, betas, weight_decay, grad_clip) -> _Compiled:
    from hybridc.canonical import dumps

    key = (dumps(model_ir), tuple(betas), float(weight_decay), float(grad_clip or 0))
    if key not in _CACHE:
        if len(_CACHE) >= 4:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = _Compiled(build(model_ir), betas, weight_decay, grad_clip)
    return _CACHE[key]


class JaxTrainer:
    """Params, optimizer state and PRNG key of one run; the step and evaluation are compiled once per model."""

    def __init__(self, model_ir, *, build, lr, warmup, steps, weight_decay, seed, betas=(0.9, 0.95), grad_clip=1.0):
        """`build`: the backend's `build` (IR -> JaxModel), passed in so this module does not import the package."""
        self.fns = _compiled(model_ir, build, betas, weight_decay, grad_clip)
        self.net = self.fns.net
        self.lr, self.warmup, self.steps = lr, warmup, steps  # the loop computes each step's rate
        init_key, self.key = jax.random.split(jax.random.PRNGKey(seed))
        self.params = self.net.init(init_key)
        self.opt_state = _strong(self.fns.tx.init(self.params))

    # --- the protocol ------------------------------------------------------------------------------------------------
    def step(self, inputs, labels, lr: float) -> dict:
        x, t = jnp.asarray(inputs, jnp.int32), jnp.asarray(labels, jnp.int32)
        self.params, self.opt_state, self.key, m = self.fns.step(self.params, self.opt_state, self.key, x, t,
                                                              jnp.asarray(lr, jnp.float32))
        out = {"loss": float(m["ce"]), "grad_norm": float(m["grad_norm"])}  # loss: cross-entropy, as torch reports
        if m["parts"] is not None:  # MoE: the auxiliary losses (added to the loss the gradient is taken of)
            out["aux_loss"] = float(m["aux"])
        return out

    def evaluate(self, inputs, labels) -> dict:
        ce, correct, n = self.fns.eval(self.params, jnp.asarray(inputs, jnp.int32), jnp.asarray(labels, jnp.int32))
        return {"eval_loss": float(ce), "accuracy": float(correct) / max(int(n), 1)}

    def save(self, dir) -> None:
        from safetensors.numpy import save_file

        from hybridc.weights import save_weights

        d = Path(dir)
        d.mkdir(parents=True, exist_ok=True)
        _atomic(d / WEIGHTS, lambda p: save_weights(self.params, p))
        arrays = {f"opt{name}": np.asarray(v) for name, v in _named_leaves(self.opt_state)}
        arrays["rng"] = np.asarray(jax.random.key_data(self.key) if _typed(self.key) else self.key)
        _atomic(d / OPTIMIZER, lambda p: save_file({k: np.array(v, order="C") for k, v in arrays.items()}, str(p)))

    def load(self, dir) -> None:
        from safetensors.numpy import load_file

        from hybridc.weights import load_weights

        d = Path(dir)
        self.params = load_weights(self.net, d / WEIGHTS)
        if not (d / OPTIMIZER).is_file():
            raise HybridcError(f"no optimizer state in {d} (expected {OPTIMIZER})")
        arrays = load_file(str(d / OPTIMIZER))
        names = [name for name, _ in _named_leaves(self.opt_state)]
        missing = [n for n in names if f"opt{n}" not in arrays]
        if missing:
            raise HybridcError(f"{d / OPTIMIZER}: optimizer state does not match the model (missing {missing[:3]})")
        leaves, treedef = jax.tree_util.tree_flatten(self.opt_state)
        self.opt_state = jax.tree_util.tree_unflatten(
            treedef, [jnp.asarray(arrays[f"opt{n}"], dtype=v.dtype).reshape(v.shape) for n, v in zip(names, leaves)])
        self.key = jnp.asarray(arrays["rng"], jnp.uint32)


def _strong(tree):
    """Every leaf an array of a fixed dtype (optax makes a weakly typed learning rate): a restored state, whose
    leaves come from files, then has the same types and the compiled step is reused, not retraced."""
    return jax.tree_util.tree_map(lambda v: jnp.asarray(v, dtype=jnp.asarray(v).dtype), tree)


def _typed(key) -> bool:
    return jnp.issubdtype(key.dtype, jax.dtypes.prng_key)


def _named_leaves(tree):
    return [(jax.tree_util.keystr(path), v) for path, v in jax.tree_util.tree_flatten_with_path(tree)[0]]


def _atomic(path: Path, write) -> None:
    """`write(tmp)` then rename onto `path` (the loop's `atomic`): a kill mid-save leaves no torn file."""
    from hybridc.train.loop import atomic

    with atomic(path) as tmp:
        write(tmp)
