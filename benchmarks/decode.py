"""Greedy decoding tokens/s: hybridc torch (eager step; torch.compile'd step) and JAX against transformers' `generate`
on the same weights, and a Mamba-130m-shaped model against the memory-bandwidth bound.

    python -m benchmarks.decode [--reps 3] [--threads 1] [--new 32] [--prompt 16] [--only mamba bamba 130m]
                                [--skip-compile] [--skip-jax] [--cpu-time]

Models (fp32, random weights, vocab 1024): (a) `mamba`: Mamba-1, hidden 256, 8 layers (transformers MambaForCausalLM);
(b) `bamba`: a Bamba-style hybrid, hidden 256, 8 layers, Mamba-2 (state 64, 8 heads of 64) with attention (4 heads,
partial RoPE) at layers 4 and 8, SwiGLU FFN 512 after every layer (BambaForCausalLM); (c) `130m`: Mamba-130m's shape
(hidden 768, 24 layers, vocab 50280, tied head), hybridc torch only, against the bound
    bytes of weights read per token (every parameter once; the tied head reads the embedding) / copy bandwidth,
the bandwidth measured here: bytes copied per second (a 256 MiB tensor, min time over the reps; a one-thread GEMV
streaming a 150 MiB matrix reads at about this rate here; STREAM's convention, read + write, would double it).
The transformers model is hybridc's export (`hybridc.save_hf`, then `AutoModelForCausalLM.from_pretrained`); each row
says whether its tokens equal transformers' (greedy, `min_new_tokens` = `max_new_tokens`, no stop token).
Batch 1 and 16, prompts of `--prompt` tokens, `--new` new tokens; tokens/s = batch * new / time (prefill included,
as `generate` runs it); min over --reps, the candidates in turn within each rep (a load change on the shared machine
hits them alike). Compile and JAX jit times are excluded (one warm-up call each).
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings

ARGS = None


def parse():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--new", type=int, default=32)
    ap.add_argument("--prompt", type=int, default=16)
    ap.add_argument("--only", nargs="*", default=["mamba", "bamba", "130m"])
    ap.add_argument("--skip-compile", action="store_true")
    ap.add_argument("--skip-jax", action="store_true")
    ap.add_argument("--cpu-time", action="store_true", help="time.process_time (this process's CPU time, all its "
                    "threads) instead of wall time: less sensitive to other jobs on a shared machine")
    return ap.parse_args()


MAMBA = "dim 256\nvocab 1024\noutput logits\nnorm rms eps=1e-05\ndropout 0\ntie_embeddings true\nlayers mamba x8\n"
BAMBA = ("dim 256\nvocab 1024\npad_token 0\noutput logits\nnorm rms eps=1e-05\ndropout 0\n"
         "ffn act=silu gated=true hidden=512 after=all\nmamba2 state=64 chunk=64\n"
         "attn window=none qk_norm=none rope=true rope_fraction=0.5\nlayers (mamba2 x3 attn) x2\n")
M130 = "dim 768\nvocab 50280\noutput logits\nnorm rms eps=1e-05\ndropout 0\ntie_embeddings true\nlayers mamba x24\n"


def timed(fn):
    clock = time.process_time if ARGS is not None and ARGS.cpu_time else time.perf_counter
    t = clock()
    out = fn()
    return clock() - t, out


def candidates(text: str, batch: int, with_hf: bool):
    """name -> a zero-argument generate call returning (B, T + new) token ids (numpy), built on shared weights."""
    import numpy as np
    import torch

    import hybridc
    from hybridc_torch import generate

    m = hybridc.load(text)
    torch.manual_seed(0)
    net = hybridc.build(m).eval()
    prompt = torch.randint(1, m.vocab, (batch, ARGS.prompt), generator=torch.Generator().manual_seed(1))
    n = ARGS.new
    out = {"hybridc torch": lambda: generate(net, prompt, n, temperature=0).numpy()}
    if not ARGS.skip_compile:
        out["hybridc torch compiled"] = lambda: generate(net, prompt, n, temperature=0, compile=True).numpy()
    if not ARGS.skip_jax:
        import jax.numpy as jnp

        from hybridc_jax import generate as jgenerate

        jnet = hybridc.build(m, backend="jax")
        params = {k: jnp.asarray(v.numpy()) for k, v in net.state_dict().items()}
        jprompt = jnp.asarray(prompt.numpy())
        out["hybridc jax"] = lambda: np.asarray(jgenerate(jnet, params, jprompt, n, temperature=0))
    if with_hf:
        import transformers as tf

        d = tempfile.mkdtemp()
        hybridc.save_hf(net, m, d)
        hf = tf.AutoModelForCausalLM.from_pretrained(d).float().eval()
        gc = hf.generation_config
        gc.eos_token_id, gc.bos_token_id, gc.pad_token_id = None, None, 0

        def hf_gen():
            with torch.no_grad():
                return hf.generate(prompt, max_new_tokens=n, min_new_tokens=n, do_sample=False).numpy()
        out["transformers"] = hf_gen
    return out, net


def race(cands: dict) -> tuple[dict, dict]:
    """Each candidate once to warm up (compile), then --reps rounds in turn: (best seconds, tokens) per name."""
    toks = {name: fn() for name, fn in cands.items()}
    best = {name: float("inf") for name in cands}
    for _ in range(ARGS.reps):
        for name, fn in cands.items():
            t, _ = timed(fn)
            best[name] = min(best[name], t)
    return best, toks


def family(label: str, text: str):
    import numpy as np

    rates = {}
    for batch in (1, 16):
        best, toks = race(candidates(text, batch, with_hf=True)[0])
        ref = toks["transformers"]
        for name, t in best.items():
            same = "-" if name == "transformers" else ("yes" if np.array_equal(toks[name], ref) else "NO")
            rates[(name, batch)] = (batch * ARGS.new / t, same)
    hf1, hf16 = rates[("transformers", 1)][0], rates[("transformers", 16)][0]
    print(f"\n({label}) tokens/s, greedy, prompt {ARGS.prompt}, {ARGS.new} new tokens")
    print(f"{'':24s} {'B1 tok/s':>9s} {'x hf':>6s} {'B16 tok/s':>10s} {'x hf':>6s} {'B16/B1':>7s} tokens==hf")
    for name in dict.fromkeys(k[0] for k in rates):
        r1, s1 = rates[(name, 1)]
        r16, s16 = rates[(name, 16)]
        print(f"{name:24s} {r1:9.0f} {r1 / hf1:6.2f} {r16:10.0f} {r16 / hf16:6.2f} {r16 / r1:7.1f} {s1}/{s16}")


def copy_bandwidth() -> float:
    """Bytes copied per second: a 256 MiB fp32 tensor, min time over the reps."""
    import torch

    a = torch.ones(64 * 2 ** 20)
    b = torch.empty_like(a)
    b.copy_(a)
    t = min(timed(lambda: b.copy_(a))[0] for _ in range(max(ARGS.reps, 3) * 2))
    return a.numel() * 4 / t


def bound_130m():
    import torch

    cands, net = candidates(M130, 1, with_hf=False)
    cands.pop("hybridc jax", None)  # (the bound is about the torch step; JAX's 130m compile is long)
    weight_bytes = sum(p.numel() * p.element_size() for p in net.parameters())  # tied head: the embedding once
    bw = copy_bandwidth()
    best, _ = race(cands)
    bound = weight_bytes / bw  # seconds per token
    print(f"\n(c) Mamba-130m shape (hidden 768, 24 layers, vocab 50280, tied), fp32, batch 1: weights "
          f"{weight_bytes / 2 ** 20:.0f} MiB read per token; copy bandwidth {bw / 1e9:.1f} GB/s -> bound "
          f"{bound * 1e3:.1f} ms/token ({1 / bound:.1f} tok/s)")
    for name, t in best.items():
        per = (t / ARGS.new)  # prefill of the short prompt included, as generate runs it
        print(f"{name:24s} {per * 1e3:7.1f} ms/token  {1 / per:6.1f} tok/s  {per / bound:5.2f}x the bound")
    del torch


def main():
    global ARGS
    ARGS = parse()
    if ARGS.threads == 1:
        os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
    import torch

    torch.set_num_threads(ARGS.threads)
    torch._dynamo.config.recompile_limit = 64  # one compiled step per model and batch size (the code object is shared)
    torch.set_grad_enabled(False)
    warnings.filterwarnings("ignore")
    load = os.getloadavg()
    print(f"benchmarks.decode: {ARGS.threads} torch thread(s), {os.cpu_count()} CPUs, load average "
          f"{load[0]:.1f} {load[1]:.1f} {load[2]:.1f} at start; min over {ARGS.reps} reps; "
          f"{'CPU' if ARGS.cpu_time else 'wall'} time")
    if "mamba" in ARGS.only:
        family("a: Mamba, hidden 256, 8 layers", MAMBA)
    if "bamba" in ARGS.only:
        family("b: Bamba-style hybrid, hidden 256, 8 layers, attention 1 in 4", BAMBA)
    if "130m" in ARGS.only:
        bound_130m()
    load = os.getloadavg()
    print(f"\nload average at end: {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")


if __name__ == "__main__":
    main()
