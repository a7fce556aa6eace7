"""Whole models against transformers: hybridc torch, hybridc JAX and transformers' class of the same family, on the
same weights, side by side in one run (issue 16, "Whole-model benchmarks").

    python -m benchmarks.models [--only NAME ...] [--lengths 1024,4096] [--rounds 2] [--new 64] [--prompt 16]
                                [--threads 1] [--no-jax] [--cap 60] [--quick] [--memory-only] [--json FILE]

Families (FAMILIES below; hidden 256, 8 layers, vocab 1024, fp32, random weights): mamba, mamba2, bamba (Mamba-2,
attention 1 in 4), nemotron_h, falcon_h1, qwen3_next, jamba. Each model is built by hybridc from its `.hyb` program,
exported with `hybridc.save_hf` and loaded with `AutoModelForCausalLM.from_pretrained` (transformers' default
attention on CPU: sdpa). Before any timing the logits of batch 2 at the first length are compared (hybridc torch and
JAX against transformers: max |diff| printed, `ok` when within 2e-5 abs + 2e-5 rel).

Measures (batch 2 unless said): forward (no grad); forward+backward (logits.sum() backward: gradients of every
parameter); peak memory of one forward+backward (RSS high-water minus RSS before the call: freed heap pages handed
back first (malloc_trim), the kernel's VmHWM reset through /proc/self/clear_refs, so every candidate and length gets
its own peak; the call runs after the warm-up, so compiled code is already there); prefill tokens/s (batch 1,
the first length, into a decoding state); greedy decoding tokens/s at batch 1 (`--prompt` tokens, `--new` new
tokens, prefill included, tokens compared with transformers' `generate(do_sample=False)`). JAX runs jitted: its
compile time (first call minus the best call) is reported separately, never in a timing.

Each family runs in a fresh subprocess (transformers' Qwen3-Next imports fla, whose Triton registration changes the
paths transformers' Mamba takes; and each family's memory is measured apart). Timing: one warm-up call, then --rounds
rounds with the candidates in turn within each round, the minimum kept, of the wall clock and of the process CPU time
(time.process_time: all threads' work, much less sensitive to a loaded machine). A transformers call predicted to
take more than --cap seconds is skipped and said so: its Mamba-1 backward (Mamba, Jamba) is a sequential Python scan
(over 600 s at 1,024 tokens), so it is skipped outright. The default run takes ~40 min on a loaded 2-core machine
(`--lengths 1024`: ~15 min); results in benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import warnings

HEAD = "dim 256\nvocab 1024\noutput logits\nnorm rms eps=1e-05\ndropout 0\n"
FAMILIES = {
    "mamba": HEAD + "tie_embeddings true\nffn after=none\nmamba state=16 expand=2 conv=4\nlayers mamba x8\n",
    "mamba2": HEAD + "tie_embeddings true\nffn after=none\nmamba2 state=64 head_dim=64 groups=1 conv=4 expand=2\n"
                     "layers mamba2 x8\n",
    "bamba": HEAD + "pad_token 0\nffn act=silu gated=true hidden=512 after=all\nmamba2 state=64 chunk=64\n"
                    "attn window=none qk_norm=none rope=true rope_fraction=0.5\nlayers (mamba2 x3 attn) x2\n",
    "nemotron_h": HEAD + "ffn after=none\nmamba2 state=64 head_dim=64 groups=2 conv=4 expand=2 dt_min=0.001\n"
                         "attn heads=4 kv_heads=2 head_dim=64 window=none rope=false qk_norm=false\n"
                         "mlp act=relu2 hidden=512 bias=false\npattern \"M-M*M-M-\"\n",
    "falcon_h1": HEAD + "fusion sum\nffn act=silu gated=true bias=false hidden=512 after=all\n"
                        "mamba2 heads=8 head_dim=64 state=64 groups=1 conv=4 out_norm=false\n"
                        "attn heads=4 kv_heads=2 head_dim=64 window=none rope=true qk_norm=false\n"
                        "layers (mamba2|attn) x8\n",
    "qwen3_next": HEAD.replace("eps=1e-05", "eps=1e-06 zero_centered=true") +
    "ffn act=silu gated=true bias=false hidden=256 after=all experts=8 top_k=2 router=softmax renorm=true "
    "shared_experts=1 shared_gate=true\ngated_delta_net heads=4 v_heads=8 head_dim=64 v_head_dim=64 conv=4 gate=true\n"
    "attn heads=4 kv_heads=2 head_dim=64 window=none rope=true rope_fraction=0.25 gate=true qk_norm=head\n"
    "layers (gated_delta_net x3 attn) x2\n",
    "jamba": HEAD.replace("eps=1e-05", "eps=1e-06") +
    "ffn act=silu gated=true bias=false hidden=512 after=all\nmoe every=2 offset=1 experts=4 top_k=2 router=softmax "
    "renorm=false\nmamba state=16 expand=2 conv=4 inner_norm=weighted\n"
    "attn heads=4 kv_heads=2 head_dim=64 window=none rope=false qk_norm=false\nlayers mamba x4 attn mamba x3\n",
}
HF_SLOW_BACKWARD = {"mamba", "jamba"}  # transformers' pure-torch Mamba-1 scan: a Python loop over every token
TOL = 2e-5
NAMES = ("hybridc torch", "hybridc jax", "transformers")


def program(family: str) -> str:
    """The family's program, named after the transformers model_type that save_hf should pick."""
    return f"model {family}\n" + FAMILIES[family]


# --- measuring -------------------------------------------------------------------------------------------------
def rss_kib(field: str) -> int:
    return int(re.search(rf"{field}:\s+(\d+)", open("/proc/self/status").read()).group(1))


def peak_mib(fn) -> float:
    """RSS high-water of one call minus RSS before it (MiB)."""
    import ctypes
    import gc

    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed heap pages back: glibc keeps them, hiding the next peak
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current RSS
    before = rss_kib("VmRSS")
    fn()
    return max(0, rss_kib("VmHWM") - before) / 1024


def clocked(fn):
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - w, time.process_time() - c, out


def race(cands: dict, rounds: int) -> dict:
    """{name: fn} -> {name: {"wall", "cpu", "first"}} seconds: a warm-up call each (its wall time kept as `first`),
    then `rounds` rounds, the candidates in turn, the minimum of each clock kept."""
    out = {}
    for name, fn in cands.items():
        first, _, _ = clocked(fn)
        out[name] = {"wall": float("inf"), "cpu": float("inf"), "first": first}
    for _ in range(rounds):
        for name, fn in cands.items():
            w, c, _ = clocked(fn)
            out[name]["wall"], out[name]["cpu"] = min(out[name]["wall"], w), min(out[name]["cpu"], c)
    return out


# --- the three implementations -----------------------------------------------------------------------------------
def build(family: str, use_jax: bool):
    """(model IR, torch net, JAX net or None, JAX params or None, transformers model), one set of weights."""
    import torch
    import transformers as tf

    import hybridc

    if family == "qwen3_next":  # with fla installed transformers calls its Triton kernels: use the torch ones
        from transformers.models.qwen3_next import modeling_qwen3_next as qn
        for name in ("torch_chunk_gated_delta_rule", "torch_recurrent_gated_delta_rule", "causal_conv1d_fn",
                     "causal_conv1d_update"):
            fn = getattr(qn, name, None)
            if fn is not None and hasattr(fn, "__wrapped__"):
                setattr(qn, name, fn.__wrapped__)
    m = hybridc.load(program(family))
    torch.manual_seed(0)
    net = hybridc.build(m).eval()
    d = tempfile.mkdtemp(prefix=f"hybridc_bench_{family}_")
    hybridc.save_hf(net, m, d)
    hf = tf.AutoModelForCausalLM.from_pretrained(d).float().eval()
    gc = hf.generation_config
    gc.eos_token_id, gc.bos_token_id, gc.pad_token_id = None, None, 0
    jnet = params = None
    if use_jax:
        import jax.numpy as jnp

        jnet = hybridc.build(m, backend="jax")
        params = {k: jnp.asarray(v.detach().numpy()) for k, v in net.state_dict().items()}
    return m, net, jnet, params, hf


def forward_fns(net, jnet, params, hf, x):
    """name -> (forward, forward+backward) zero-argument calls on ids x (B, L) (torch)."""
    import torch

    def fb(model, call):
        def run():
            for p in model.parameters():
                p.grad = None
            call().sum().backward()
        return run

    def nograd(call):
        def run():
            with torch.no_grad():
                return call()
        return run

    out = {"hybridc torch": (nograd(lambda: net(x)), fb(net, lambda: net(x))),
           "transformers": (nograd(lambda: hf(input_ids=x).logits), fb(hf, lambda: hf(input_ids=x).logits))}
    if jnet is not None:
        import jax
        import jax.numpy as jnp

        xj = jnp.asarray(x.numpy())
        fwd = jax.jit(lambda p, x: jnet.apply(p, x))
        grad = jax.jit(jax.grad(lambda p, x: jnet.apply(p, x).sum()))
        out["hybridc jax"] = (lambda: jax.block_until_ready(fwd(params, xj)),
                              lambda: jax.block_until_ready(grad(params, xj)))
    return out


def prefill_fns(net, jnet, params, hf, x):
    """name -> a zero-argument prefill of ids x (1, L) into a decoding state."""
    import torch

    L = x.shape[1]

    def ours():
        with torch.no_grad():
            return net(x, state=net.init_state(1, max_len=L + 1))

    def theirs():
        with torch.no_grad():
            return hf(input_ids=x, use_cache=True).logits

    out = {"hybridc torch": ours, "transformers": theirs}
    if jnet is not None:
        import jax
        import jax.numpy as jnp

        xj = jnp.asarray(x.numpy())
        fn = jax.jit(lambda p, x, s: jnet.apply(p, x, s, start=True))
        out["hybridc jax"] = lambda: jax.block_until_ready(fn(params, xj, jnet.init_state(1, max_len=L + 1)))
    return out


def generate_fns(net, jnet, params, hf, prompt, n: int):
    """name -> a zero-argument greedy generation of n tokens after prompt (1, T), returning (1, T + n) numpy ids."""
    import numpy as np
    import torch

    from hybridc_torch import generate

    def theirs():
        with torch.no_grad():
            return hf.generate(prompt, max_new_tokens=n, min_new_tokens=n, do_sample=False).numpy()

    out = {"hybridc torch": lambda: generate(net, prompt, n, temperature=0).numpy(), "transformers": theirs}
    if jnet is not None:
        import jax.numpy as jnp

        from hybridc_jax import generate as jgenerate

        pj = jnp.asarray(prompt.numpy())
        out["hybridc jax"] = lambda: np.asarray(jgenerate(jnet, params, pj, n, temperature=0))
    return out


# --- one family (in its own process) ----------------------------------------------------------------------------
def timed_race(cands: dict, rounds: int, cap: float, skipped: dict) -> dict:
    """race() with the cap: a candidate whose warm-up call took over `cap` seconds keeps that one call (flagged);
    not JAX, whose warm-up is its compile."""
    slow, first = {}, {}
    for name in list(cands):
        if name in skipped:
            cands.pop(name)
            continue
        w, c, _ = clocked(cands[name])
        first[name] = w  # JAX: the compile
        if w > cap and name != "hybridc jax":  # JAX's first call is mostly its compile (over 60 s at 4k under load)
            slow[name] = {"wall": w, "cpu": c, "first": w, "capped": True}
            cands.pop(name)
    return {n: t | {"first": first[n]} for n, t in race(cands, rounds).items()} | slow


def logits_check(net, jnet, params, hf, x) -> dict:
    import numpy as np
    import torch

    with torch.no_grad():
        want = hf(input_ids=x).logits.numpy()
        got = {"hybridc torch": net(x).numpy()}
    if jnet is not None:
        got["hybridc jax"] = np.asarray(jnet.apply(params, x.numpy()))
    return {name: {"max_abs": float(np.abs(g - want).max()),
                   "ok": bool(np.allclose(g, want, rtol=TOL, atol=TOL))} for name, g in got.items()}


def run_family(family: str, opts) -> dict:
    import numpy as np
    import torch

    torch.set_num_threads(opts.threads)
    warnings.filterwarnings("ignore")
    m, net, jnet, params, hf = build(family, not opts.no_jax)
    res = {"family": family, "params": sum(p.numel() for p in net.parameters()), "hf_class": type(hf).__name__,
           "lengths": {}, "notes": []}
    g = torch.Generator().manual_seed(0)
    prev = {}
    for i, L in enumerate(opts.lengths):
        x = torch.randint(1, m.vocab, (opts.batch, L), generator=g)
        if i == 0:
            res["check"] = logits_check(net, jnet, params, hf, x)
            res["check_length"] = L
        fns = forward_fns(net, jnet, params, hf, x)
        row = {}
        for k, what in enumerate(("fwd", "fb")):
            skipped = {}
            if what == "fb" and family in HF_SLOW_BACKWARD:
                skipped["transformers"] = "pure-torch Mamba-1 scan backward (over 600 s at 1,024 tokens): skipped"
            elif "transformers" in prev.get(what, {}):
                t = prev[what]["transformers"]["wall"] * L / prev["L"]
                if t > opts.cap:
                    skipped["transformers"] = f"predicted {t:.0f} s a call (> --cap {opts.cap:.0f} s): skipped"
            if opts.memory_only:
                skipped |= {n: "memory only" for n in fns} if what == "fwd" else {}
                for n in set(fns) - set(skipped):
                    fns[n][1]()  # warm-up (JAX: compile)
                row[what] = {n: {"wall": 0.0, "cpu": 0.0, "first": 0.0} for n in set(fns) - set(skipped)}
            else:
                row[what] = timed_race({n: f[k] for n, f in fns.items()}, opts.rounds, opts.cap, skipped)
            row[what + "_skipped"] = skipped
        row["peak_mib"] = {n: peak_mib(f[1]) for n, f in fns.items() if n in row["fb"]}
        res["lengths"][L] = row
        prev = {"L": L, **{w: row[w] for w in ("fwd", "fb")}}
        print(f"  {family} L={L} done ({time.strftime('%H:%M:%S')})", file=sys.stderr, flush=True)
    if opts.memory_only:
        return res
    L = opts.lengths[0]
    x1 = torch.randint(1, m.vocab, (1, L), generator=g)
    res["prefill"] = timed_race(prefill_fns(net, jnet, params, hf, x1), opts.rounds, opts.cap, {})
    res["prefill_length"] = L
    prompt = torch.randint(1, m.vocab, (1, opts.prompt), generator=g)
    gens = generate_fns(net, jnet, params, hf, prompt, opts.new)
    first = {n: clocked(f) for n, f in gens.items()}  # (wall, cpu, tokens); JAX: the compile
    toks = {n: t[2] for n, t in first.items()}
    res["decode"] = {n: t | {"first": first[n][0]} for n, t in race(gens, opts.rounds).items()}
    res["decode_same"] = {n: bool(np.array_equal(t, toks["transformers"])) for n, t in toks.items()}
    return res


# --- the report ---------------------------------------------------------------------------------------------------
def ratio(a, b) -> str:
    return "-" if a is None or not b else f"{a / b:.2f}x"


def ms_cell(t: dict | None, clock: str = "wall") -> str:
    if t is None:
        return "skipped"
    return f"{t[clock] * 1e3:,.0f}" + (" (1 call, capped)" if t.get("capped") else "")


def time_table(results: list, what: str, title: str) -> list[str]:
    lines = [f"\n#### {title} (ms, batch 2; min wall, min CPU time in brackets; ratio = transformers / ours)\n",
             "| family | L | hybridc torch | hybridc JAX | transformers | tf/torch wall | tf/torch CPU | tf/JAX wall |"
             " tf/JAX CPU |", "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        for L, row in r["lengths"].items():
            t = row[what]
            cells = [f"{ms_cell(t.get(n))} [{ms_cell(t.get(n), 'cpu')}]" if n in t else "skipped" for n in NAMES]
            hf = t.get("transformers")
            rs = [ratio(hf and hf[c], t[n][c] if n in t else None) for n in NAMES[:2] for c in ("wall", "cpu")]
            lines.append(f"| {r['family']} | {L} | " + " | ".join(cells + rs) + " |")
    return lines


def memory_table(results: list) -> list[str]:
    out = ["\n#### Peak memory of one forward+backward (MiB: RSS high-water minus RSS before the call, after "
           "malloc_trim)\n",
           "| family | L | hybridc torch | hybridc JAX | transformers | tf/torch | tf/JAX |",
           "|---|---|---|---|---|---|---|"]
    for r in results:
        for L, row in r["lengths"].items():
            p = row["peak_mib"]
            cells = [f"{p[n]:,.0f}" if n in p else "-" for n in NAMES] + \
                [ratio(p.get("transformers"), p.get(n)) for n in NAMES[:2]]
            out.append(f"| {r['family']} | {L} | " + " | ".join(cells) + " |")
    return out


def report(results: list, opts, load0, load1, elapsed: float) -> str:
    import torch
    import transformers

    try:
        import jax
        jv = jax.__version__
    except ImportError:  # pragma: no cover
        jv = "absent"
    out = [f"### Whole models, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: torch {torch.__version__}, "
           f"JAX {jv}, transformers {transformers.__version__}; {opts.threads} torch thread(s), {os.cpu_count()} CPUs; "
           f"load average {load0:.1f} at start, {load1:.1f} at end; {opts.rounds} rounds, min kept; "
           f"{elapsed / 60:.1f} min in all\n",
           "| family | transformers class | params | logits max abs diff: torch | JAX | within 2e-5 |",
           "|---|---|---|---|---|---|"]
    for r in results:
        c = r["check"]
        ok = all(v["ok"] for v in c.values())
        out.append(f"| {r['family']} | {r['hf_class']} | {r['params']:,} | {c['hybridc torch']['max_abs']:.1e} | "
                   f"{c['hybridc jax']['max_abs']:.1e} | {'yes' if ok else 'NO'} |" if "hybridc jax" in c else
                   f"| {r['family']} | {r['hf_class']} | {r['params']:,} | {c['hybridc torch']['max_abs']:.1e} | - | "
                   f"{'yes' if ok else 'NO'} |")
    if opts.memory_only:
        return "\n".join(out + memory_table(results))
    out += time_table(results, "fwd", "Forward")
    out += time_table(results, "fb", "Forward + backward (logits.sum())")
    notes = sorted({f"{r['family']}: transformers {why}" for r in results for row in r["lengths"].values()
                    for why in row["fb_skipped"].values()} |
                   {f"{r['family']}: transformers forward {why}" for r in results for row in r["lengths"].values()
                    for why in row["fwd_skipped"].values()})
    out += [f"- {n}" for n in notes]
    out += memory_table(results)
    out += [f"\n#### Prefill (batch 1, into a decoding state) and greedy decoding (batch 1, prompt {opts.prompt}, "
            f"{opts.new} new tokens, prefill included): tokens/s from the min wall time\n",
            "| family | prefill L | torch | JAX | transformers | tf/torch | tf/JAX | decode torch | JAX | transformers"
            " | ours/tf torch | ours/tf JAX | tokens == transformers' |", "|---" * 13 + "|"]
    for r in results:
        L, p, d = r["prefill_length"], r["prefill"], r["decode"]
        pre = {n: L / p[n]["wall"] for n in NAMES if n in p}
        dec = {n: opts.new / d[n]["wall"] for n in NAMES if n in d}
        same = "/".join("yes" if r["decode_same"][n] else "NO" for n in NAMES[:2] if n in r["decode_same"])
        out.append(f"| {r['family']} | {L} | " + " | ".join(f"{pre[n]:,.0f}" if n in pre else "-" for n in NAMES) +
                   f" | {ratio(p['transformers']['wall'], p.get(NAMES[0], {}).get('wall'))} | "
                   f"{ratio(p['transformers']['wall'], p.get(NAMES[1], {}).get('wall'))} | " +
                   " | ".join(f"{dec[n]:,.0f}" if n in dec else "-" for n in NAMES) +
                   " | " + " | ".join(ratio(dec.get(n), dec["transformers"]) for n in NAMES[:2]) + f" | {same} |")
    if not opts.no_jax:
        out += ["\n#### JAX compile time (s: first call minus the best call; excluded from every timing above)\n",
                "| family | " + " | ".join(f"fwd {L} | f+b {L}" for L in opts.lengths) + " | prefill | generate |",
                "|---|" + "---|---|" * len(opts.lengths) + "---|---|"]
        for r in results:
            cj = [max(0.0, t["first"] - t["wall"]) for t in
                  [r["lengths"][L][w]["hybridc jax"] for L in opts.lengths for w in ("fwd", "fb")] +
                  [r["prefill"]["hybridc jax"], r["decode"]["hybridc jax"]]]
            out.append(f"| {r['family']} | " + " | ".join(f"{c:.1f}" for c in cj) + " |")
    return "\n".join(out)


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="+", choices=sorted(FAMILIES), default=list(FAMILIES))
    ap.add_argument("--lengths", default="1024,4096")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="torch threads; 1 also keeps XLA to one thread")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--new", type=int, default=64)
    ap.add_argument("--prompt", type=int, default=16)
    ap.add_argument("--cap", type=float, default=60.0, help="seconds: a slower transformers call is skipped")
    ap.add_argument("--no-jax", action="store_true")
    ap.add_argument("--quick", action="store_true", help="length 32, 1 round, 4 new tokens: a smoke run")
    ap.add_argument("--memory-only", action="store_true", help="only the forward+backward peak memory table")
    ap.add_argument("--json", help="also write the raw results here")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    opts = ap.parse_args(argv)
    if opts.quick:
        opts.lengths, opts.rounds, opts.new, opts.prompt = "32", 1, 4, 8
    opts.lengths = [int(v) for v in str(opts.lengths).split(",")]
    return opts


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    opts = parse(argv)
    if opts.threads == 1:  # before jax is imported (inherited by the workers)
        os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
    if opts.worker:
        print("RESULT " + json.dumps(run_family(opts.worker, opts)), flush=True)
        return
    load0, t0, results = os.getloadavg()[0], time.perf_counter(), []
    rest = [a for a in argv if a not in opts.only and a != "--only"]
    for fam in opts.only:
        print(f"{fam} ({time.strftime('%H:%M:%S')}, load {os.getloadavg()[0]:.1f})", file=sys.stderr, flush=True)
        proc = subprocess.run([sys.executable, "-m", "benchmarks.models", "--worker", fam, *rest],
                              stdout=subprocess.PIPE, text=True, env=os.environ | {"TOKENIZERS_PARALLELISM": "false"})
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if proc.returncode or line is None:
            print(f"{fam}: the worker failed (exit {proc.returncode})", file=sys.stderr)
            continue
        r = json.loads(line[7:])
        r["lengths"] = {int(k): v for k, v in r["lengths"].items()}
        results.append(r)
        if opts.json:  # after each family: a long run interrupted keeps what it measured
            with open(opts.json, "w") as f:
                json.dump(results, f, indent=1)
    print(report(results, opts, load0, os.getloadavg()[0], time.perf_counter() - t0))


if __name__ == "__main__":
    main()
