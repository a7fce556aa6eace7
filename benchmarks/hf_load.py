"""Loading a Hugging Face checkpoint at scale: peak memory and time, hybridc vs transformers' `from_pretrained`.

    python -m benchmarks.hf_load [--dir /tmp/hybridc_hf_1b] [--dtype fp32|bf16]

Writes (once) a 1B-parameter Bamba-shaped checkpoint with random weights, in 4 shards with an index, then runs each
loader in a fresh process (one at a time): hybridc torch (build, then `load_hf_weights`), hybridc JAX
(`load_hf_weights` -> params), transformers `from_pretrained`. Peak memory is the process's peak RSS above its RSS
after the imports, divided by the model's size in its dtype (target < 1.25 for hybridc). The checkpoint's own pages
are read through memory maps; each tensor's map is released after it is placed.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

SHAPE = dict(vocab_size=32000, hidden_size=2048, num_hidden_layers=16, attn_layer_indices=[5, 11], mamba_d_state=128,
             mamba_n_heads=64, mamba_d_head=64, mamba_n_groups=1, mamba_d_conv=4, num_attention_heads=16,
             num_key_value_heads=4, intermediate_size=5632, tie_word_embeddings=False, pad_token_id=0)


def write(d: Path, dtype: str) -> int:
    """The checkpoint, written tensor by tensor from the names and shapes transformers' class has (meta device)."""
    import numpy as np
    import torch
    import transformers as tf

    from hybridc.hf.checkpoint import write_safetensors
    from hybridc.hf.numpy_side import to_bits

    cfg = tf.BambaConfig(**SHAPE)
    with torch.device("meta"):
        hf = tf.BambaForCausalLM(cfg)
    shapes = {k: tuple(v.shape) for k, v in hf.state_dict().items()}
    d.mkdir(parents=True, exist_ok=True)
    cfg.dtype = {"fp32": "float32", "bf16": "bfloat16"}[dtype]
    cfg.save_pretrained(d)
    tag = {"fp32": "F32", "bf16": "BF16"}[dtype]
    rng = np.random.default_rng(0)
    names = sorted(shapes)
    total = sum(int(np.prod(s)) for s in shapes.values())
    shards, cur, cur_n, weight_map = [], {}, 0, {}
    per_shard = total // 4 + 1
    for name in names:
        cur[name] = to_bits(rng.standard_normal(shapes[name], dtype=np.float32) * 0.02, tag)
        cur_n += int(np.prod(shapes[name]))
        if cur_n >= per_shard or name == names[-1]:
            shards.append(cur)
            cur, cur_n = {}, 0
    for i, tensors in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        write_safetensors(tensors, d / fname, metadata={"format": "pt"})
        weight_map.update({k: fname for k in tensors})
        tensors.clear()
    (d / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return total


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def peak_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def child(which: str, d: str) -> None:
    """One loader in this process; prints JSON {seconds, base_kib, peak_kib, params}."""
    if which == "transformers":
        import torch
        import transformers as tf
    elif which == "hybridc-torch":
        import torch

        import hybridc
        import hybridc_torch  # noqa: F401
    else:
        import jax

        import hybridc
        import hybridc_jax  # noqa: F401
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak RSS mark to now (after the imports)
    base = rss_kib()
    t0 = time.perf_counter()
    if which == "transformers":
        net = tf.AutoModelForCausalLM.from_pretrained(d)
        n = sum(p.numel() for p in net.parameters())
    elif which == "hybridc-torch":
        m = hybridc.load_hf(d)
        with torch.device("meta"):
            net = hybridc.build(m)
        net = net.to_empty(device="cpu")  # storage only: every tensor is then filled from the checkpoint
        t1 = time.perf_counter()
        hybridc.load_hf_weights(net, d)
        n = sum(p.numel() for p in net.parameters())
    else:
        m = hybridc.load_hf(d)
        params = hybridc.load_hf_weights(hybridc.build(m, backend="jax"), d)
        jax.block_until_ready(params)
        n = sum(int(v.size) for v in params.values())
    dt = time.perf_counter() - t0
    if which == "transformers":  # its tensors stay views of the file's map until read: read each once
        with torch.no_grad():
            for p in net.parameters():
                p.sum()
    elif which == "hybridc-torch":
        with torch.no_grad():
            for p in net.parameters():
                p.sum()
    touched = time.perf_counter() - t0
    print(json.dumps({"seconds": dt, "touched": touched, "base_kib": base, "peak_kib": peak_kib(), "params": n}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", default="/tmp/hybridc_hf_1b")
    ap.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        return child(*a.child)
    d = Path(a.dir) / a.dtype
    if not (d / "model.safetensors.index.json").is_file():
        t = time.perf_counter()
        n = write(d, a.dtype)
        print(f"wrote {n / 1e9:.2f}B parameters ({a.dtype}) to {d} in {time.perf_counter() - t:.0f} s")
    size = {"fp32": 4, "bf16": 2}[a.dtype]
    rows = []
    for which in ("hybridc-torch", "transformers", "hybridc-jax"):
        env = dict(os.environ, TRANSFORMERS_VERBOSITY="error")
        out = subprocess.run([sys.executable, "-m", "benchmarks.hf_load", "--child", which, str(d)],
                             capture_output=True, text=True, env=env)
        if out.returncode != 0:
            print(f"{which}: failed\n{out.stderr[-2000:]}")
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        model_kib = r["params"] * size / 1024
        rows.append((which, r["seconds"], r["touched"], (r["peak_kib"] - r["base_kib"]) / model_kib, r["params"]))
    print(f"\n1B-parameter Bamba-shaped checkpoint, {a.dtype}, 4 shards; peak = peak RSS above the post-import RSS "
          f"/ model size ({rows[0][4] * size / 2**30:.2f} GiB)" if rows else "")
    print(f"{'loader':<16}{'load s':>10}{'+ read every weight s':>24}{'peak/model':>12}")
    for which, s, t, p, _ in rows:
        print(f"{which:<16}{s:>10.2f}{t:>24.2f}{p:>12.2f}")
    ref = {w: t for w, _, t, _, _ in rows}
    if "transformers" in ref and "hybridc-torch" in ref:
        print(f"time ratio (loaded and read once) transformers / hybridc-torch: "
              f"{ref['transformers'] / ref['hybridc-torch']:.2f}")


if __name__ == "__main__":
    main()
