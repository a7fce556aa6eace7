"""The mixture-of-experts layer on CPU, against transformers' experts implementations and the dense FFN of its width.

    python -m benchmarks.moe [--reps 3] [--threads 2] [--jax] [--skip-eager] [--only layer|decode]
                             [--clock wall|process]

Layer: batch 4, sequence 512, dim 512, 64 experts, top-8, expert hidden 256 (SwiGLU experts, softmax router, top-k
renormalised: Mixtral's block), fp32. Forward (no grad) and forward+backward (a sum of the output; gradients of the
input and every parameter), min over --reps, the candidates run in turn within each rep (so a load change on a
shared machine hits them alike). Rows:
    ours            `hybridc_torch.layers.moe.MoE`, impl=auto (forward without autograd: expert by expert on its
                    gathered rows; with autograd: grouped_mm on the sorted rows), and impl=loop (a loop of products)
    hf grouped_mm   transformers' MixtralSparseMoeBlock, `experts_implementation="grouped_mm"` (what a model loaded
                    with from_pretrained gets by default where grouped_mm runs, as on CPU with torch >= 2.10)
    hf eager        the same block, `experts_implementation="eager"` (its per-expert loop with one_hot masks)
    dense FFN       our dense SwiGLU FFN of hidden top_k * 256 = 2048: the compute the MoE cannot avoid
(transformers' `batched_mm` gathers every slot's expert weights: 16384 x 3 x 256 x 512 floats = 24 GiB here; left out.)
Ratios: other time / our (impl=auto) time; > 1 means ours is faster; for the dense FFN, our time / dense time (the
issue's target: <= 2).

Decoding: one token, batch 1, dim 256, top-10, expert hidden 128, `step` at 512 experts vs 64 experts (Qwen3-Next's
routing at dim 256), torch and (--jax) JAX side by side: the time should not grow with the experts beyond the router
(its E x D product, also shown).

`--jax`: the JAX rows, in the same rounds as torch's (`benchmarks._moe_jax`: `layer_calls` and `decoders` take the
torch layer's state dict as numpy arrays and the input). `--only layer|decode`: one of the two tables. `--threads N`
limits torch (and XLA to one thread when N is 1). `--clock process`: CPU time of this process instead of wall time,
robust to other jobs on a shared machine (meaningful with --threads 1; at 2 threads spin-waiting counts).
"""
from __future__ import annotations

import argparse
import os
import time
import warnings
from functools import partial
from types import SimpleNamespace

import torch

from hybridc_torch.layers.ffn import FFN
from hybridc_torch.layers.moe import MoE

B, L, DIM, E, K, FH = 4, 512, 512, 64, 8, 256
DEC_DIM, DEC_K, DEC_F = 256, 10, 128
CLOCK, CLOCK_NAME = time.perf_counter, "wall clock"  # --clock process: time.process_time


def moe_spec(experts: int, top_k: int, hidden: int) -> SimpleNamespace:
    return SimpleNamespace(experts=experts, top_k=top_k, hidden=hidden, mult=4.0, act="swiglu", gated=False,
                           bias=False, shared_experts=0, shared_hidden=None, shared_gate=False, router="softmax",
                           renorm=True, gate_scale=1.0, down_scale=1.0)


def hf_block(ours: MoE, impl: str):
    """transformers' MixtralSparseMoeBlock with our weights and experts implementation `impl`, or None."""
    try:
        from transformers import MixtralConfig
        from transformers.models.mixtral.modeling_mixtral import MixtralSparseMoeBlock
    except ImportError:
        return None
    cfg = MixtralConfig(hidden_size=DIM, intermediate_size=FH, num_local_experts=E, num_experts_per_tok=K,
                        hidden_act="silu", router_jitter_noise=0.0)
    cfg._experts_implementation = impl
    block = MixtralSparseMoeBlock(cfg)
    with torch.no_grad():
        block.gate.weight.copy_(ours.router.weight)
        block.experts.gate_up_proj.copy_(ours.experts.gate_up_proj)
        block.experts.down_proj.copy_(ours.experts.down_proj)
    return block


def _out(y):
    return y[0] if isinstance(y, tuple) else y


def _call(fn, x, backward: bool):
    if not backward:
        with torch.no_grad():
            fn(x)
        return
    x.grad = None
    _out(fn(x)).sum().backward()


def timed_round_robin(calls: dict, reps: int) -> dict:
    """{label: min seconds of CLOCK}: one warm-up call each, then reps rounds calling every candidate once per
    round."""
    for call in calls.values():
        call()
    best = {k: float("inf") for k in calls}
    for _ in range(reps):
        for k, call in calls.items():
            t = CLOCK()
            call()
            best[k] = min(best[k], CLOCK() - t)
    return best


def layer_rows(reps: int, skip_eager: bool, jax: bool) -> None:
    torch.manual_seed(0)
    ours = MoE(DIM, moe_spec(E, K, FH))
    loop = MoE(DIM, moe_spec(E, K, FH), impl="loop")
    loop.load_state_dict(ours.state_dict())
    dense = FFN(DIM, moe_spec(0, 0, K * FH))
    fns = {"ours (auto)": ours, "ours (loop)": loop}
    for impl in ("grouped_mm",) + (() if skip_eager else ("eager",)):
        block = hf_block(ours, impl)
        if block is not None:
            fns[f"hf {impl}"] = block
    fns["dense FFN h=2048"] = dense
    x = torch.randn(B, L, DIM, generator=torch.Generator().manual_seed(1)).requires_grad_()
    with torch.no_grad():  # the same math: transformers' block gives our output
        for k, fn in fns.items():
            if k.startswith("hf"):
                err = (_out(fn(x)) - ours(x)[0]).abs().max().item()
                assert err < 1e-4, (k, err)
    calls = {k: (partial(_call, fn, x, False), partial(_call, fn, x, True)) for k, fn in fns.items()}
    if jax:  # in the same rounds as torch's
        from ._moe_jax import layer_calls

        calls |= layer_calls({k: v.detach().numpy() for k, v in ours.state_dict().items()}, x.detach().numpy())
    fwd = timed_round_robin({k: c[0] for k, c in calls.items()}, reps)
    fb = timed_round_robin({k: c[1] for k, c in calls.items()}, reps)
    ref_f, ref_b = fwd["ours (auto)"], fb["ours (auto)"]
    print(f"MoE layer B{B} L{L} D{DIM} E{E} top-{K} F{FH}, fp32, {torch.get_num_threads()} threads, {CLOCK_NAME} "
          f"(load average {os.getloadavg()[0]:.1f}); ratio = other / ours (auto), >1: ours faster")
    print(f"{'':24s} {'fwd ms':>9s} {'ratio':>7s} {'f+b ms':>9s} {'ratio':>7s}")
    for k in calls:
        print(f"{k:24s} {fwd[k] * 1e3:9.1f} {fwd[k] / ref_f:7.2f} {fb[k] * 1e3:9.1f} {fb[k] / ref_b:7.2f}")
    print(f"ours / dense FFN of the active width: fwd {ref_f / fwd['dense FFN h=2048']:.2f}x, "
          f"f+b {ref_b / fb['dense FFN h=2048']:.2f}x (target <= 2)")


def _per_call(fns: dict, reps: int, n: int = 200) -> dict:
    """{label: min seconds of CLOCK per call}: 20 warm-up calls each, then reps rounds of n calls of every candidate
    in turn."""
    for fn in fns.values():
        for _ in range(20):
            fn()
    best = {k: float("inf") for k in fns}
    for _ in range(reps):
        for k, fn in fns.items():
            t = CLOCK()
            for _ in range(n):
                fn()
            best[k] = min(best[k], (CLOCK() - t) / n)
    return best


def decode_rows(reps: int, jax: bool) -> None:
    """One decoding step, batch 1, at 64 and at 512 experts; the router's product alone beside it; torch and (--jax)
    JAX side by side, all in the same rounds."""
    fns = {}
    x = torch.randn(1, DEC_DIM, generator=torch.Generator().manual_seed(2))
    for experts in (64, 512):
        torch.manual_seed(0)
        layer = MoE(DEC_DIM, moe_spec(experts, DEC_K, DEC_F)).eval()
        fns[experts, "torch step"], fns[experts, "torch router"] = partial(layer.step, x, {}), \
            partial(layer.router_logits, x)
        if jax:
            from ._moe_jax import decoders

            for k, call in decoders({k: v.detach().numpy() for k, v in layer.state_dict().items()}, x.numpy(),
                                    DEC_K).items():
                fns[experts, k] = call
    with torch.no_grad():
        best = _per_call(fns, reps)
    res = {e: {k: v for (e2, k), v in best.items() if e2 == e} for e in (64, 512)}
    print(f"\ndecoding one token, batch 1, D{DEC_DIM} top-{DEC_K} F{DEC_F}, {CLOCK_NAME} (step, us; router = its E x D "
          "product)")
    names = [k.split()[0] for k in res[64] if k.endswith("step")]
    print(f"{'experts':>8s}" + "".join(f" {n + ' step':>11s} {'router':>7s} {'- router':>9s}" for n in names))
    for experts, r in res.items():
        print(f"{experts:8d}" + "".join(f" {r[n + ' step'] * 1e6:11.1f} {r[n + ' router'] * 1e6:7.1f} "
                                        f"{(r[n + ' step'] - r[n + ' router']) * 1e6:9.1f}" for n in names))
    for n in names:
        step, router = (lambda e: res[e][n + " step"]), (lambda e: res[e][n + " router"])
        print(f"{n} 512 vs 64 experts: step {step(512) / step(64):.2f}x, step minus router "
              f"{(step(512) - router(512)) / (step(64) - router(64)):.2f}x (expert weights touched: top-{DEC_K} of E)")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--jax", action="store_true", help="add the JAX rows (benchmarks/_moe_jax.py)")
    ap.add_argument("--skip-eager", action="store_true", help="leave out transformers' eager loop (slow)")
    ap.add_argument("--only", choices=("layer", "decode"), default=None, help="run one of the two tables")
    ap.add_argument("--clock", choices=("wall", "process"), default="wall",
                    help="process: the CPU time of this process's threads (robust to other jobs; use with --threads 1)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
        if args.threads == 1:  # XLA: one thread (read when jax starts; more than one: its own pool)
            flags = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
            os.environ["XLA_FLAGS"] = f"{flags} {os.environ.get('XLA_FLAGS', '')}".strip()
    if args.clock == "process":
        global CLOCK, CLOCK_NAME
        CLOCK, CLOCK_NAME = time.process_time, "CPU time"
    warnings.filterwarnings("ignore")
    if args.only != "decode":
        layer_rows(args.reps, args.skip_eager, args.jax)
    if args.only != "layer":
        decode_rows(args.reps, args.jax)


if __name__ == "__main__":
    main()
