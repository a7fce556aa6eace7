"""The whole check of a Hugging Face family through the user's path (shared by tests/hf/test_hf_<family>.py).

A family test builds a tiny transformers model (every structural feature of the family present), and `check_family`:

1. perturbs its weights with seeded noise (default inits leave norms at one and biases at zero, where a swapped
   name would go unnoticed) and writes it with `save_pretrained` (sharded when `shard=True`);
2. `hybridc.import_hf` -> the `.hyb` text (its header names the class), `load_hf` -> Model; describe's parameter
   count == transformers' unique-Parameter count == our torch numel;
3. `load_hf_weights` into torch: logits == transformers' to 1e-5 (fp32, batch 2, length 11); into JAX: 1e-4;
4. greedy generation of 32 tokens with our decoding state == transformers' `generate(do_sample=False)` tokens;
5. export: `save_hf` of our torch model -> `from_pretrained` (no missing/unexpected keys) -> the same logits, and
   `import_hf` of the exported directory gives the same `.hyb` text.
"""
from __future__ import annotations

import json

import numpy as np
import torch

import hybridc

TOL, JAX_TOL = 1e-5, 1e-4


def perturb(model: torch.nn.Module, seed: int = 0, scale: float = 0.05) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in sorted(model.named_parameters()):
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))


def hf_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())  # unique Parameters (a tied head once)


def ids(vocab: int, batch: int = 2, length: int = 11, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(seed))


def written_config(tmp_path, cfg, drop=(), **fields):
    """transformers' config `cfg` saved to tmp_path, its config.json then edited: `drop` keys removed, `fields` set."""
    import json

    cfg.save_pretrained(tmp_path)
    path = tmp_path / "config.json"
    data = {k: v for k, v in json.loads(path.read_text()).items() if k not in drop}
    path.write_text(json.dumps(data | fields, indent=2))
    return path


def refused(tmp_path, cfg, drop=(), **fields) -> str:
    """The message of the HybridcError `import_hf` raises for the edited config (see `written_config`)."""
    import pytest

    path = written_config(tmp_path, cfg, drop, **fields)
    with pytest.raises(hybridc.HybridcError) as e:
        hybridc.import_hf(path)
    return str(e.value)


def reads_as_zoo_program(tmp_path, config_class, case: str) -> None:
    """The published config of zoo case `case` (tests/zoo's values), saved by transformers' `config_class`, imports as
    examples/zoo/<case>.hyb: the same layer kinds in order and the same parameter count."""
    from pathlib import Path

    from zoo.test_zoo_counts import CASES

    config_class(**CASES[case][2]).save_pretrained(tmp_path)
    got = hybridc.load_hf(tmp_path / "config.json")
    want = hybridc.load((Path(__file__).parents[2] / f"examples/zoo/{case}.hyb").read_text())
    assert [l.mixers[0].kind for l in got.layers] == [l.mixers[0].kind for l in want.layers]
    assert hybridc.describe(got)["params"] == hybridc.describe(want)["params"]


def greedy_hf(hf, prompt, n: int):
    gc = hf.generation_config
    gc.eos_token_id, gc.bos_token_id = None, None  # no early stop: exactly n tokens
    gc.pad_token_id = 0
    with torch.no_grad():
        return hf.generate(prompt, max_new_tokens=n, do_sample=False, min_new_tokens=0)


def check_family(hf, tmp_path, *, vocab: int, shard: bool = False, jax: bool = True, generate: int = 32,
                 seed: int = 0, expect_in_text: tuple[str, ...] = ()) -> dict:
    from hybridc_torch.generate import generate as our_generate

    hf = hf.float().eval()
    perturb(hf, seed)
    src = tmp_path / "hf"
    hf.save_pretrained(src, max_shard_size="20KB" if shard else "5GB")
    if shard:
        assert (src / "model.safetensors.index.json").is_file(), "expected a sharded checkpoint"

    text = hybridc.import_hf(src)
    assert text.startswith(f"# transformers {type(hf).__name__} "), text.splitlines()[0]
    for piece in expect_in_text:
        assert piece in text, f"{piece!r} not in the imported program:\n{text}"
    m = hybridc.load_hf(src)
    assert hybridc.load(text) == m
    ours = hybridc.build(m, backend="torch")
    n_ours = sum(p.numel() for p in ours.parameters())
    assert hf_count(hf) == hybridc.describe(m)["params"] == n_ours, \
        f"parameter counts: transformers {hf_count(hf)}, describe {hybridc.describe(m)['params']}, torch {n_ours}"
    ours = hybridc.load_hf_weights(ours, src).float().eval()

    x = ids(vocab, seed=seed)
    with torch.no_grad():
        want = hf(input_ids=x).logits.float().numpy()
        got = ours(x).float().numpy()
    out = {"params": n_ours, "max_abs": float(np.abs(got - want).max())}
    np.testing.assert_allclose(got, want, rtol=TOL, atol=TOL, err_msg="logits: hybridc torch vs transformers")

    if jax:
        jnet = hybridc.build(m, backend="jax")
        params = hybridc.load_hf_weights(jnet, src)
        jgot = np.asarray(jnet.apply(params, x.numpy()))
        out["jax_max_abs"] = float(np.abs(jgot - want).max())
        np.testing.assert_allclose(jgot, want, rtol=JAX_TOL, atol=JAX_TOL, err_msg="logits: hybridc JAX vs transformers")

    if generate:
        prompt = x[:1, :5]
        theirs = greedy_hf(hf, prompt, generate)
        mine = our_generate(ours, prompt, generate, temperature=0)
        assert theirs.shape == mine.shape == (1, 5 + generate)
        assert torch.equal(theirs, mine), f"greedy tokens differ:\n transformers {theirs[0, 5:].tolist()}\n " \
                                          f"hybridc      {mine[0, 5:].tolist()}"

    dst = tmp_path / "exported"
    hybridc.save_hf(ours, m, dst)
    # AutoModelForCausalLM picks this class for the exported model_type (transformers' own table: flash-linear-
    # attention, once imported anywhere in the process, registers its own Mamba/Mamba2 classes for those types)
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    exported_type = json.loads((dst / "config.json").read_text())["model_type"]
    assert MODEL_FOR_CAUSAL_LM_MAPPING_NAMES[exported_type] == type(hf).__name__
    back, info = type(hf).from_pretrained(dst, output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    with torch.no_grad():
        again = back.float().eval()(input_ids=x).logits.float().numpy()
    np.testing.assert_allclose(again, want, rtol=TOL, atol=TOL, err_msg="logits after save_hf -> from_pretrained")
    assert hybridc.import_hf(dst) == text, "import of the exported checkpoint gives a different program"
    return out
