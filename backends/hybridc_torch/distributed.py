"""`torchrun --nproc_per_node N -m hybridc train ... --distributed ddp|fsdp`: the torch trainer on N processes.

The process group comes from torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT): gloo on CPU,
nccl on CUDA (one GPU per process, `cuda:LOCAL_RANK`). Every rank builds the same model from the same seed, then
    ddp    wraps it in DistributedDataParallel;
    fsdp   FSDP2: `fully_shard` on every block, then on the root (parameters, gradients and optimizer state sharded).

Data: every rank draws the loop's same global batch (B, L) and trains on its slice of B / N rows. Each rank's loss is
its sum of cross-entropy over the global count of scored positions, times N; the gradient averaging over ranks then
gives exactly the gradient of the global batch's mean loss, so the losses equal one process with the same batch (up
to float summation order; with dropout > 0 the masks differ). Reported loss, eval_loss and accuracy are reduced over
ranks. The loop writes metrics, run.json and state.json from rank 0 only (`is_main`) and calls `barrier`.

Checkpoints (all readable by a single-process `--resume`, and by a distributed one of either kind):
    ddp    rank 0 writes the single-process files (model.safetensors, optimizer.pt, rng.pt);
    fsdp   `torch.distributed.checkpoint` (DCP) writes the sharded model and optimizer state (from
           `get_state_dict`, keyed by parameter names) into `dcp/`, each rank its shards; rank 0 also writes the full
           weights to model.safetensors (for `hybridc` and JAX) and rng.pt. A single process loads `dcp/` into its
           plain model and optimizer (DCP without a process group, then `set_state_dict`).
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.distributed as dist

from hybridc.train.loop import atomic

from .train import IGNORE, TorchTrainer, _aux_loss, load_dcp

MODES = ("ddp", "fsdp")
DCP = "dcp"


def init_process_group() -> bool:
    """Initialise the default process group from torchrun's environment; True when this call created it."""
    if dist.is_initialized():
        return False
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        from hybridc.errors import UsageError

        raise UsageError("--distributed needs a launcher's environment (RANK, WORLD_SIZE, ...): run it as "
                         "`torchrun --nproc_per_node N -m hybridc train ... --distributed ddp`")
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group(backend)
    return True


def _blocks(net):
    """The model's distinct blocks (a shared block once; call sites of shared blocks are left to the root)."""
    from .model import Block

    seen, out = set(), []
    for blk in net.layers:
        if isinstance(blk, Block) and id(blk) not in seen:
            seen.add(id(blk))
            out.append(blk)
    return out


class DistributedTrainer(TorchTrainer):
    """TorchTrainer on a process group; the step/evaluate/save/load protocol of hybridc/train/loop.py."""

    def __init__(self, model, *, distributed: str, **options):
        if distributed not in MODES:
            raise ValueError(f"distributed must be one of {MODES}, got {distributed!r}")
        self._owns_group = init_process_group()
        self.mode = distributed
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.is_main = self.rank == 0
        if torch.cuda.is_available():  # one GPU per process, also when the caller created the group
            local = int(os.environ.get("LOCAL_RANK", 0))
            torch.cuda.set_device(local)
            options.setdefault("device", f"cuda:{local}")
        super().__init__(model, **options)  # builds self.net (same seed: same weights on every rank) and self.opt

    def _wrap(self):
        if self.mode == "ddp":
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.module = self.net
            self.net = DDP(self.net, device_ids=ids)
        else:
            from torch.distributed.fsdp import fully_shard

            for blk in _blocks(self.net):
                fully_shard(blk)
            fully_shard(self.net)
            self.module = self.net

    def _make_optimizer(self):
        self._wrap()  # before the optimizer: FSDP2 replaces the parameters by sharded DTensors
        return super()._make_optimizer()

    def barrier(self) -> None:
        dist.barrier()

    def close(self) -> None:
        if self._owns_group and dist.is_initialized():
            dist.destroy_process_group()
            self._owns_group = False

    def _slice(self, inputs, labels):
        b = inputs.shape[0]
        if b % self.world:
            from hybridc.errors import UsageError

            raise UsageError(f"--batch {b} must be divisible by the {self.world} processes")
        n = b // self.world
        return inputs[self.rank * n:(self.rank + 1) * n], labels[self.rank * n:(self.rank + 1) * n]

    def _sum(self, *values) -> list[float]:
        t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.tolist()

    def step(self, inputs, labels, lr: float) -> dict:
        count = max(int((labels != IGNORE).sum()), 1)  # scored positions of the global batch
        x, y = self._tensors(*self._slice(inputs, labels))
        self.net.train()
        for group in self.opt.param_groups:
            group["lr"] = lr
        logits = self.net(x)
        local = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), y.reshape(-1),
                                                  ignore_index=IGNORE, reduction="sum") / count
        aux = _aux_loss(self.module)
        total = local * self.world if aux is None else local * self.world + aux
        self.opt.zero_grad(set_to_none=True)
        total.backward()  # DDP / FSDP average the gradients over ranks: the global mean loss's gradient
        if self.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.grad_clip)
        self.opt.step()
        sums = self._sum(local.detach(), 0.0 if aux is None else aux.detach())
        out = {"loss": sums[0]}
        if aux is not None:
            out["aux_loss"] = sums[1] / self.world
        return out

    @torch.no_grad()
    def evaluate(self, inputs, labels) -> dict:
        x, y = self._tensors(*self._slice(inputs, labels))
        self.net.eval()
        logits = self.net(x)
        scored = y != IGNORE
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), y.reshape(-1),
                                                 ignore_index=IGNORE, reduction="sum")
        correct = ((logits.argmax(-1) == y) & scored).sum()
        loss, correct, n = self._sum(loss, correct, scored.sum())
        return {"eval_loss": loss / max(n, 1.0), "accuracy": correct / max(n, 1.0)}

    def save(self, dir) -> None:
        dir = Path(dir)
        if self.mode == "ddp":
            if self.is_main:
                TorchTrainer.save(self, dir)  # self.net is the DDP wrapper: save the module's weights
            return
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, get_state_dict

        model_sd, optim_sd = get_state_dict(self.net, self.opt)
        dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=str(dir / DCP))
        full = get_model_state_dict(self.net, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if self.is_main:
            from hybridc.weights import save_weights

            with atomic(dir / "model.safetensors") as tmp:
                save_weights({k: v.detach().numpy() for k, v in full.items()}, tmp)
            self._save_rng(dir)

    def load(self, dir) -> None:
        dir = Path(dir)
        if self.mode == "ddp" or not (dir / DCP).is_dir():
            if self.mode == "fsdp":
                from hybridc.errors import UsageError

                raise UsageError(f"--distributed fsdp resumes only a checkpoint written by --distributed fsdp; {dir} "
                                 "was written by one process or ddp: resume it with ddp or one process")
            return TorchTrainer.load(self, dir)
        load_dcp(self.net, self.opt, dir / DCP)
        self._load_rng(dir)


def trainer(model, *, distributed: str, **options) -> DistributedTrainer:
    return DistributedTrainer(model, distributed=distributed, **options)
