"""`hybridc train --backend jax --devices N`: the JAX trainer on a device mesh (data parallel + FSDP).

The mesh has the two axes of the usual JAX layout, ("data", "fsdp"), with shape (1, N): every device is on the `fsdp`
axis, which serves both roles, as in ZeRO-3 / FSDP:

- the batch is split over ("data", "fsdp"): each device computes the loss of B / N sequences (B divisible by N);
- every parameter and every optimizer-state array (AdamW's mu and nu have the parameters' shapes) is split over
  `fsdp` along its largest dimension divisible by N, the rest replicated (biases of odd size, scalars, the count);
- the step is `jit`ted with these `NamedSharding`s as in- and out-shardings; XLA inserts the all-gathers of the
  weights and the reduce-scatters of the gradients. The loss is the global batch's mean, so the steps equal a
  one-device run's with the same global batch (up to float summation order).

Checkpoints gather every array to the host and write the single-process files (`model.safetensors`,
`optimizer.safetensors`): a sharded run's checkpoint resumes on one device and the other way round, on any N.

Multi-host: when `JAX_COORDINATOR_ADDRESS` (with `JAX_NUM_PROCESSES`, `JAX_PROCESS_ID`) is set, or a SLURM / Open MPI
launch of more than one task is detected, `jax.distributed.initialize` is called before any device is touched; N then
counts the devices of all hosts (`jax.devices()`). Every process runs the same loop on the same seeded data, gives
the global batch, and keeps its own devices' slices of it (`make_array_from_callback`).
"""
from __future__ import annotations

import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from hybridc.errors import HybridcError

from .train import JaxTrainer, _compiled, _strong

AXES = ("data", "fsdp")
BATCH = P(AXES)  # the batch dimension over both axes


def maybe_initialize_distributed() -> bool:
    """`jax.distributed.initialize()` when launched as one of several processes; True if it was called."""
    if jax.distributed.is_initialized():
        return True
    env = os.environ
    if env.get("JAX_COORDINATOR_ADDRESS"):
        kw = {k: int(env[v]) for k, v in (("num_processes", "JAX_NUM_PROCESSES"), ("process_id", "JAX_PROCESS_ID"))
              if env.get(v)}
        jax.distributed.initialize(env["JAX_COORDINATOR_ADDRESS"], **kw)
        return True
    if int(env.get("SLURM_NTASKS", "1")) > 1 or int(env.get("OMPI_COMM_WORLD_SIZE", "1")) > 1:
        jax.distributed.initialize()  # the cluster's own variables (JAX's auto-detection)
        return True
    return False


def make_mesh(n: int) -> Mesh:
    maybe_initialize_distributed()
    devices = jax.devices()
    if n < 1 or n > len(devices):
        raise HybridcError(f"--devices {n}: {len(devices)} {devices[0].platform} device(s) available",
                           hint="on CPU, XLA_FLAGS=--xla_force_host_platform_device_count=N gives N host devices")
    return Mesh(np.asarray(devices[:n]).reshape(1, n), AXES)


def spec(shape, n: int) -> P:
    """Split the largest dimension divisible by `n` over `fsdp` (the first of equal ones); replicate otherwise."""
    dims = [i for i, d in enumerate(shape) if d % n == 0 and d >= n]
    if not dims or n == 1:
        return P()
    i = max(dims, key=lambda j: (shape[j], -j))
    return P(*([None] * i + ["fsdp"]))


def shardings(tree, mesh: Mesh):
    """A `NamedSharding` per leaf of `tree` (arrays or ShapeDtypeStructs)."""
    n = mesh.shape["fsdp"]
    return jax.tree_util.tree_map(lambda v: NamedSharding(mesh, spec(np.shape(v), n)), tree)


def put(host, sharding):
    """A global array from a host array every process holds whole (one process or many)."""
    host = np.asarray(host)
    return jax.make_array_from_callback(host.shape, sharding, lambda idx: host[idx])


def gather(tree):
    """Every leaf as a whole numpy array on the host (all processes take part when there are several)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        return jax.tree_util.tree_map(np.asarray, multihost_utils.process_allgather(tree, tiled=True))
    return jax.tree_util.tree_map(np.asarray, tree)


class ShardedJaxTrainer(JaxTrainer):
    """A `JaxTrainer` whose params, optimizer state and step live on a mesh of `devices` devices."""

    def __init__(self, model_ir, *, build, devices, lr, warmup, steps, weight_decay, seed, betas=(0.9, 0.95),
                 grad_clip=1.0):
        self.mesh = make_mesh(devices)
        self.n = devices
        self.fns = _compiled(model_ir, build, betas, weight_decay, grad_clip)
        self.net = self.fns.net
        self.lr, self.warmup, self.steps = lr, warmup, steps
        init_key, key = jax.random.split(jax.random.PRNGKey(seed))
        self.repl = NamedSharding(self.mesh, P())
        self.batch_sharding = NamedSharding(self.mesh, BATCH)
        self.param_sh = shardings(jax.eval_shape(self.net.init, init_key), self.mesh)
        # initialised sharded (no device holds the whole model); the threefry PRNG gives the values one device would
        self.params = jax.jit(self.net.init, out_shardings=self.param_sh)(init_key)
        opt_state = _strong(self.fns.tx.init(self.params))
        self.opt_sh = shardings(opt_state, self.mesh)
        self.opt_state = jax.device_put(opt_state, self.opt_sh)
        self.key = jax.device_put(key, self.repl)
        cache = self.fns.__dict__.setdefault("sharded", {})  # compiled once per (model, mesh)
        ids = tuple(d.id for d in self.mesh.devices.flat)
        if ids not in cache:
            b, r = self.batch_sharding, self.repl
            cache[ids] = (
                jax.jit(self.fns._train_step, donate_argnums=(0, 1),
                        in_shardings=(self.param_sh, self.opt_sh, r, b, b, r),
                        out_shardings=(self.param_sh, self.opt_sh, r, r)),
                jax.jit(self.fns._eval_step, in_shardings=(self.param_sh, b, b), out_shardings=r))
        self.jstep, self.jeval = cache[ids]

    def _batch(self, inputs, labels):
        if len(inputs) % self.n:
            raise HybridcError(f"the batch of {len(inputs)} sequences does not split over --devices {self.n}",
                               hint="choose a --batch divisible by --devices")
        return (put(np.asarray(inputs, np.int32), self.batch_sharding),
                put(np.asarray(labels, np.int32), self.batch_sharding))

    def step(self, inputs, labels, lr: float) -> dict:
        x, t = self._batch(inputs, labels)
        self.params, self.opt_state, self.key, m = self.jstep(self.params, self.opt_state, self.key, x, t,
                                                              np.float32(lr))
        out = {"loss": float(m["ce"]), "grad_norm": float(m["grad_norm"])}
        if m["parts"] is not None:
            out["aux_loss"] = float(m["aux"])
        return out

    def evaluate(self, inputs, labels) -> dict:
        ce, correct, n = self.jeval(self.params, *self._batch(inputs, labels))
        return {"eval_loss": float(ce), "accuracy": float(correct) / max(int(n), 1)}

    @property
    def is_main(self) -> bool:
        """The loop's hook: only process 0 writes run.json, metrics and the checkpoint files (multi-host)."""
        return jax.process_index() == 0

    def barrier(self) -> None:
        """The loop's hook around a checkpoint: every process takes part in the gather of `save`."""
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices("hybridc checkpoint")

    def save(self, dir) -> None:
        """Gathered to the host: the single-process files (loadable by a run on any number of devices)."""
        host = object.__new__(JaxTrainer)
        host.params, host.opt_state, host.key = gather((self.params, self.opt_state, self.key))
        if self.is_main:
            JaxTrainer.save(host, dir)

    def load(self, dir) -> None:
        JaxTrainer.load(self, dir)  # host arrays, then onto the mesh
        self.params = jax.tree_util.tree_map(lambda v, s: put(v, s), self.params, self.param_sh)
        self.opt_state = jax.tree_util.tree_map(lambda v, s: put(v, s), self.opt_state, self.opt_sh)
        self.key = put(self.key, self.repl)
