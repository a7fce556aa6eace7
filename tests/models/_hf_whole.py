"""Whole-model checks against transformers' ForCausalLM at a tiny size (shared by tests/models/test_hf_*.py).

A family test builds transformers' model from a config, writes the equivalent hybridc program, and gives a mapping
from transformers' state-dict names to ours. `check_whole` then asserts:

- the same parameter count: transformers' unique Parameters == hybridc's describe == our torch numel sum;
- every transformers tensor is read by the mapping and every one of our tensors is produced, with the right shape
  (one error lists every unmapped, unused or misshapen name);
- the logits agree (rtol = atol = 1e-5, fp32) on random token ids (batch 2, length 11);
- our decoding (a prefill of the first half, then one `step` per token) gives the same logits (`decode`);
- optionally, JAX's logits from the same weights through one safetensors file.

A mapping is a function `convert(src) -> {our_name: tensor}`; `src` behaves as transformers' state dict (tied
duplicates removed) and records which names were read. `rules(...)` builds one from regex renames; families whose
layouts differ (a fused projection split in two, a per-head layout) add a function for those names.

Every transformers weight is perturbed with seeded noise before copying (`perturb`): default inits leave norms at
one and biases at zero, where a swapped name would go unnoticed. transformers' own init draws from torch's global
generator: seed it (`torch.manual_seed(0)`) before building the model for run-to-run identical numbers.
"""
from __future__ import annotations

import logging
import re
from typing import Callable, Iterable

import numpy as np
import pytest
import torch

import hybridc

TOL = 1e-5
LOG = logging.getLogger("hf_whole")


class Source(dict):
    """transformers' state dict that remembers which names a mapping read."""

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.read: set[str] = set()

    def __getitem__(self, key):
        self.read.add(key)
        return super().__getitem__(key)

    def take(self, pattern: str) -> dict[str, torch.Tensor]:
        """All entries whose name fully matches `pattern` (marked read), by name."""
        return {k: self[k] for k in list(self.keys()) if re.fullmatch(pattern, k)}


Rule = tuple  # (pattern, replacement) or (pattern, replacement, transform(tensor, match) -> tensor)


def rules(*rs: Rule, extra: Callable[[Source], dict] | None = None) -> Callable[[Source], dict]:
    """A mapping from regex rules: each transformers name is renamed by the first rule whose pattern fully matches
    (replacement in `re.sub` syntax; a replacement of None drops the name on purpose: it is counted as read);
    `extra(src)` adds names that need more than a rename."""

    def convert(src: Source) -> dict:
        out = dict(extra(src)) if extra is not None else {}
        for name in list(src.keys()):
            if name in src.read:
                continue
            for r in rs:
                m = re.fullmatch(r[0], name)
                if m is None:
                    continue
                t = src[name]
                if r[1] is None:
                    break
                new = m.expand(r[1])
                out[new] = r[2](t, m) if len(r) > 2 and r[2] is not None else t
                break
        return out

    return convert


def hf_state(model: torch.nn.Module) -> Source:
    """transformers' persistent tensors, a tied duplicate (lm_head == embeddings) listed once."""
    seen, out = {}, Source()
    for name, t in model.state_dict().items():
        key = (t.data_ptr(), t.shape, t.stride())
        if key in seen:
            continue
        seen[key] = name
        out[name] = t.detach().clone()
    return out


def hf_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())  # unique Parameters (a tied head once)


def perturb(model: torch.nn.Module, seed: int = 0, scale: float = 0.05) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in sorted(model.named_parameters()):
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))


def set_eps(modules: Iterable[torch.nn.Module], eps: float) -> None:
    """Set the eps of transformers' norm modules (instances only; `variance_epsilon` or `eps`): for a config whose
    one eps covers norms hybridc keeps at different eps (e.g. block norms at 1e-6, a mixer's inner norm at 1e-5)."""
    for mod in modules:
        for attr in ("variance_epsilon", "eps", "epsilon"):
            if hasattr(mod, attr):
                setattr(mod, attr, eps)
                break
        else:
            raise AttributeError(f"{type(mod).__name__} has no eps attribute")


def map_weights(hf: torch.nn.Module, ours: torch.nn.Module, convert: Callable[[Source], dict]) -> dict:
    """Run the mapping and check names and shapes both ways; -> {our_name: tensor} (every name of ours)."""
    src = hf_state(hf)
    got = convert(src)
    want = {n: t for n, t in ours.state_dict().items()}
    ours_unique = dict(ours.named_parameters())
    ours_unique.update({n: b for n, b in ours.named_buffers() if n in want})
    problems = []
    unused = sorted(set(src) - src.read)
    if unused:
        problems.append("transformers names the mapping never read:\n  " + "\n  ".join(
            f"{n} {tuple(src[n].shape)}" for n in unused))
    unknown = sorted(set(got) - set(want))
    if unknown:
        problems.append("names the mapping produced that our model lacks:\n  " + "\n  ".join(
            f"{n} {tuple(got[n].shape)}" for n in unknown))
    missing = sorted(set(ours_unique) - set(got))
    if missing:
        problems.append("our names the mapping never produced:\n  " + "\n  ".join(
            f"{n} {tuple(ours_unique[n].shape)}" for n in missing))
    shapes = [f"{n}: mapped {tuple(got[n].shape)}, ours {tuple(want[n].shape)}"
              for n in sorted(set(got) & set(want)) if tuple(got[n].shape) != tuple(want[n].shape)]
    if shapes:
        problems.append("shape mismatches:\n  " + "\n  ".join(shapes))
    if problems:
        raise AssertionError("weight mapping transformers -> hybridc:\n" + "\n".join(problems))
    # tied names of ours (lm_head.weight when it is embed.weight) come along with their Parameter
    return {n: got[n] if n in got else None for n in want}


def load_into(ours: torch.nn.Module, mapped: dict) -> None:
    with torch.no_grad():
        for n, t in ours.state_dict(keep_vars=True).items():
            if mapped.get(n) is not None:
                t.copy_(mapped[n].to(t.dtype))


def ids(vocab: int, batch: int = 2, length: int = 11, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(seed))


def check_whole(hf: torch.nn.Module, program: str, convert: Callable[[Source], dict], *, vocab: int,
                jax: bool = False, tmp_path=None, seed: int = 0, length: int = 11, tol: float = TOL,
                decode: bool = True) -> dict:
    """The whole check (see the module docstring); -> {"params", "max_abs", "jax_max_abs"} for reports."""
    hf = hf.float().eval()
    perturb(hf, seed)
    m = hybridc.load(program)
    desc = hybridc.describe(m)["params"]
    torch.manual_seed(seed)
    ours = hybridc.build(m, backend="torch").float().eval()
    n_ours = sum(p.numel() for p in ours.parameters())
    n_hf = hf_count(hf)
    assert n_hf == desc == n_ours, \
        f"parameter counts: transformers {n_hf}, describe {desc}, our torch numel {n_ours}"
    load_into(ours, map_weights(hf, ours, convert))
    x = ids(vocab, length=length, seed=seed)
    with torch.no_grad():
        want = hf(input_ids=x).logits.float().numpy()
        got = ours(x).float().numpy()
    out = {"params": n_hf, "max_abs": float(np.abs(got - want).max())}
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol, err_msg="logits: hybridc torch vs transformers")
    if decode:
        out["decode_max_abs"] = decode_logits_diff(ours, x, want, tol)
    if jax:
        out["jax_max_abs"] = jax_logits_diff(m, ours, x, want, tmp_path, tol)
    return out


def decode_logits_diff(ours, x, want, tol: float = TOL) -> float:
    """Prefill the first half of `x`, then step token by token; the logits against transformers' `want`."""
    half = x.shape[1] // 2
    with torch.no_grad():
        y, state = ours(x[:, :half], state=ours.init_state(x.shape[0]))
        steps = [y]
        for t in range(half, x.shape[1]):
            y_t, state = ours.step(x[:, t], state)
            steps.append(y_t[:, None])
    got = torch.cat(steps, dim=1).float().numpy()
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol, err_msg="logits: hybridc decoding vs transformers")
    return float(np.abs(got - want).max())


def jax_logits_diff(m, ours, x, want, tmp_path, tol: float = TOL) -> float:
    """Our torch weights -> one safetensors file -> JAX params; JAX's logits against transformers' `want`."""
    pytest.importorskip("jax")
    path = tmp_path / "w.safetensors"
    hybridc.save_weights(ours, path)
    jn = hybridc.build(m, backend="jax")
    params = hybridc.load_weights(jn, path)
    got = np.asarray(jn.apply(params, x.numpy()))
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol, err_msg="logits: hybridc JAX vs transformers")
    return float(np.abs(got - want).max())


def report(name: str, out: dict) -> None:
    """Log the numbers (shown with `pytest --log-cli-level=INFO`); tests assert, they never print."""
    extra = "".join(f", {k} {out[f'{k}_max_abs']:.2e}" for k in ("decode", "jax") if f"{k}_max_abs" in out)
    LOG.info("%s: params %d, max |logit diff| torch %.2e%s", name, out["params"], out["max_abs"], extra)


__all__ = ["Source", "rules", "check_whole", "hf_state", "hf_count", "perturb", "map_weights", "set_eps", "ids",
           "decode_logits_diff", "report", "TOL"]
