"""The torch trainer of `hybridc train` (protocol in hybridc/train/loop.py): AdamW (torch.optim), gradient clipping,
mean cross-entropy over labels != -100 plus the model's MoE auxiliary losses (weighted by
hybridc.train.loop.AUX_WEIGHTS).

Checkpoint files (written by `save` into the loop's folder, each atomically):
    model.safetensors   the weights, `hybridc.save_weights` format
    optimizer.pt        `optimizer.state_dict()`
    rng.pt              torch's CPU RNG state (dropout), and CUDA's when on a GPU
    dcp/                instead of model.safetensors' role for resuming, after `--distributed fsdp`: the sharded
                        model and optimizer state (torch.distributed.checkpoint; distributed.py), loaded here too
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from hybridc.train.loop import AUX_WEIGHTS, atomic
from hybridc.weights import load_weights, save_weights

from .model import HybridModel

IGNORE = -100


def _aux_loss(net) -> torch.Tensor | None:
    """The model's MoE auxiliary losses from its last forward, weighted by AUX_WEIGHTS and summed, or None."""
    fn = getattr(net, "aux_losses", None)
    values = fn() if callable(fn) else None
    if not values:
        return None
    return sum(AUX_WEIGHTS.get(k, 0.01) * v for k, v in values.items())


class TorchTrainer:
    """One model, its AdamW optimizer and its RNG, stepped by the loop with numpy batches (B, L) of token ids."""

    def __init__(self, model, *, lr: float, warmup: int, steps: int, weight_decay: float, seed: int,
                 betas=(0.9, 0.95), grad_clip: float = 1.0, device=None, impl: str = "auto"):
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        torch.manual_seed(seed)
        self.net = self.module = HybridModel(model, impl=impl).to(self.device)
        self._adamw = dict(lr=lr, betas=tuple(betas), weight_decay=weight_decay)
        self.opt = self._make_optimizer()
        self.grad_clip = grad_clip

    def _make_optimizer(self):
        """AdamW over self.net's parameters (distributed.py wraps self.net first)."""
        a = self._adamw
        decay = [p for p in self.net.parameters() if p.ndim >= 2]
        no_decay = [p for p in self.net.parameters() if p.ndim < 2]  # norms, biases, scalars: no weight decay
        return torch.optim.AdamW([{"params": decay, "weight_decay": a["weight_decay"]},
                                  {"params": no_decay, "weight_decay": 0.0}], lr=a["lr"], betas=a["betas"])

    def _tensors(self, inputs, labels):
        return (torch.from_numpy(inputs).to(self.device, torch.long),
                torch.from_numpy(labels).to(self.device, torch.long))

    def _loss(self, logits, y):
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), y.reshape(-1), ignore_index=IGNORE)

    def step(self, inputs, labels, lr: float) -> dict:
        x, y = self._tensors(inputs, labels)
        self.net.train()
        for group in self.opt.param_groups:
            group["lr"] = lr
        loss = self._loss(self.net(x), y)
        aux = _aux_loss(self.module)
        total = loss if aux is None else loss + aux
        self.opt.zero_grad(set_to_none=True)
        total.backward()
        if self.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.grad_clip)
        self.opt.step()
        out = {"loss": float(loss.detach())}
        if aux is not None:
            out["aux_loss"] = float(aux.detach())
        return out

    @torch.no_grad()
    def evaluate(self, inputs, labels) -> dict:
        x, y = self._tensors(inputs, labels)
        self.net.eval()
        logits = self.net(x)
        scored = y != IGNORE
        correct = (logits.argmax(-1) == y) & scored
        return {"eval_loss": float(self._loss(logits, y)),
                "accuracy": float(correct.sum()) / max(int(scored.sum()), 1)}

    def save(self, dir) -> None:
        dir = Path(dir)
        with atomic(dir / "model.safetensors") as tmp:
            save_weights(self.module, tmp)
        with atomic(dir / "optimizer.pt") as tmp:
            torch.save(self.opt.state_dict(), tmp)
        self._save_rng(dir)

    def _save_rng(self, dir) -> None:
        rng = {"cpu": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        with atomic(dir / "rng.pt") as tmp:
            torch.save(rng, tmp)

    def load(self, dir) -> None:
        dir = Path(dir)
        if (dir / "dcp").is_dir():  # written by `--distributed fsdp` (distributed.py): sharded model + optimizer
            load_dcp(self.net, self.opt, dir / "dcp")
        else:
            load_weights(self.module, dir / "model.safetensors")
            self.opt.load_state_dict(torch.load(dir / "optimizer.pt", map_location=self.device))
        self._load_rng(dir)

    def _load_rng(self, dir) -> None:
        rng = torch.load(Path(dir) / "rng.pt")
        torch.set_rng_state(rng["cpu"])
        if "cuda" in rng and self.device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"], self.device)


def trainer(model, **options) -> TorchTrainer:
    """`backend.trainer(model, *, lr, warmup, steps, weight_decay, seed, betas, grad_clip)` in one process (with
    `distributed="ddp"|"fsdp"` the backend object hands over to distributed.py's)."""
    return TorchTrainer(model, **options)


def load_dcp(net, opt, path) -> None:
    """Load a DCP checkpoint (`{"model", "optim"}` from `get_state_dict`) into a model and its optimizer: sharded
    (FSDP2, every rank) or plain (one process, no process group)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    model_sd, optim_sd = get_state_dict(net, opt)
    state = {"model": model_sd, "optim": optim_sd}
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dcp.load(state, checkpoint_id=str(path))
    else:  # one process: DCP says it assumes so; it is intended
        import warnings

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="torch.distributed is disabled")
            dcp.load(state, checkpoint_id=str(path))
    set_state_dict(net, opt, model_state_dict=state["model"], optim_state_dict=state["optim"])
