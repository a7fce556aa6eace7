"""The JAX mixture of experts (`hybridc_jax/layers/moe.py`, `hybridc_jax/ops/grouped_matmul/`): the grouped matmul's
implementations against the masked reference (values and gradients, empty groups, rows past the groups), the layer's
fast form against its reference (experts that get no token included), against the torch layer with the same weights
(values 1e-5, gradients, aux losses, decoding), tie-breaking, `jit`/`grad`, and that the fast path never runs every
expert on every token.

Glossary: T tokens, D model dim, E experts, K top_k, M rows, G groups.
"""
from __future__ import annotations

from functools import partial
from types import SimpleNamespace as NS

import numpy as np
import pytest

jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402

from hybridc_jax.layers import moe  # noqa: E402
from hybridc_jax.ops.grouped_matmul import OP, grouped_ffn, grouped_matmul  # noqa: E402
from hybridc_jax.ops.grouped_matmul.tiled import _tile, _visits  # noqa: E402

DIM = 16
DEFAULTS = dict(mult=4.0, act="gelu", gated=False, bias=False, hidden=None, gate_scale=1.0, down_scale=1.0,
                token_shift=False, experts=0, top_k=2, shared_experts=0, shared_hidden=None, shared_gate=False,
                router="softmax", renorm=True)


def moe_spec(**options) -> NS:
    """An FFN spec with experts, the resolved IR's field names (docs/layers.md, "Mixture of experts")."""
    return NS(**(DEFAULTS | options))


SPECS = {
    "E4-K2-swiglu": moe_spec(experts=4, top_k=2, act="swiglu", hidden=8),
    "E8-K3-gelu-plain-norenorm": moe_spec(experts=8, top_k=3, act="gelu", hidden=12, renorm=False),
    "E6-K2-sigmoid-shared-gated": moe_spec(experts=6, top_k=2, act="silu", gated=True, hidden=8, router="sigmoid",
                                           shared_experts=2, shared_gate=True),
    "E5-K1-relu2-shared": moe_spec(experts=5, top_k=1, act="relu2", hidden=7, shared_experts=1, shared_hidden=5),
}


def rand(*shape, seed=1):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape).astype(np.float32))


def close(a, b, tol=1e-5):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol * max(np.abs(b).max(initial=0.0), 0.1))  # 0.1: exact zeros


# --- the grouped matmul --------------------------------------------------------------------------------------------
GROUPS = {"empty-groups": [10, 0, 20, 0, 7], "rows-past-groups": [10, 0, 20, 0, 5], "one-row-groups": [0, 1, 0, 2],
          "one-group": [0, 300, 0, 0], "all-empty": [0, 0, 0]}


@pytest.mark.parametrize("impl", ["tiled", "ragged_dot"])
@pytest.mark.parametrize("case", list(GROUPS))
def test_grouped_matmul_equals_reference(case, impl):
    sizes = jnp.asarray(GROUPS[case], jnp.int32)
    m, g, k, n = max(int(sizes.sum()), 3), len(GROUPS[case]), 6, 5
    x, w, dy = rand(m, k, seed=1), rand(g, n, k, seed=2), rand(m, n, seed=3)
    outs = {}
    for name in ("reference", impl):
        f = jax.jit(lambda x, w, name=name: grouped_matmul(x, w, sizes, impl=name))
        loss = jax.jit(jax.grad(lambda x, w, name=name: jnp.sum(grouped_matmul(x, w, sizes, impl=name) * dy), (0, 1)))
        outs[name] = (f(x, w), *loss(x, w))
    for got, want in zip(outs[impl], outs["reference"]):
        close(got, want)


FFN_CASES = {"T1-K2-E9": (1, 2, 9), "T7-K3-E5": (7, 3, 5), "T40-K2-E3-one-unused": (40, 2, 3),
             "T300-K1-E2": (300, 1, 2)}


@pytest.mark.parametrize("impl", ["tiled", "ragged_dot"])
@pytest.mark.parametrize("case", list(FFN_CASES))
def test_grouped_ffn_equals_reference(case, impl):
    """The whole expert FFN (tiled: the fused loop forward, the composed form's gradient) against two reference
    matmuls: values and gradients of x, the scales and both weights; experts with no slot included."""
    t, k, g = FFN_CASES[case]
    rng = np.random.default_rng(0)
    idx = np.stack([rng.choice(g - (case.endswith("unused")), k, replace=False) for _ in range(t)])  # (T, K)
    order = jnp.argsort(jnp.asarray(idx.reshape(-1)), stable=True)
    sizes = jnp.bincount(jnp.asarray(idx.reshape(-1)), length=g)
    x, scale, dy = rand(t, 6, seed=1), rand(t * k, seed=2), rand(t, 5, seed=3)
    w_in, w_out = rand(g, 8, 6, seed=4), rand(g, 5, 4, seed=5)
    act = partial(moe._hidden, moe_spec(act="swiglu"))  # (.., 8) -> (.., 4)
    outs = {}
    for name in ("reference", impl):
        def f(x, scale, w_in, w_out, name=name):
            return grouped_ffn(x, order, scale, w_in, w_out, sizes, act, impl=name)
        loss = jax.grad(lambda *a, f=f: jnp.sum(f(*a) * dy), (0, 1, 2, 3))
        outs[name] = (jax.jit(f)(x, scale, w_in, w_out), *jax.jit(loss)(x, scale, w_in, w_out))
    for got, want in zip(outs[impl], outs["reference"]):
        close(got, want)


def test_tiled_visits_bounded_by_rows_not_groups():
    """Visits in use = sum ceil(n_g / T) (one per non-empty group here); the table's size ceil(M/T) + min(G, M): no
    size proportional to G beyond the group sizes themselves."""
    sizes = jnp.zeros(512, jnp.int32).at[jnp.array([3, 100, 511])].set(jnp.array([4, 5, 1]))
    t = _tile(10, 512)
    group, start, rows, used = _visits(sizes, 10, t)
    assert group.shape[0] == -(-10 // t) + 10 and int(used) == 3
    assert np.asarray(group[:3]).tolist() == [3, 100, 511] and np.asarray(start[:3]).tolist() == [0, 4, 9]
    assert np.asarray(rows[:3]).tolist() == [4, 5, 1]
    assert OP.resolve("auto", "cpu")[0] == "tiled" and OP.resolve("auto", "gpu")[0] == "ragged_dot"


# --- the layer: fast form, reference, jit/grad ---------------------------------------------------------------------
def _init(spec, seed=0, dim=DIM):
    return moe.init(dim, spec, key=jax.random.PRNGKey(seed))


def _loss(fn, spec, r):
    return jax.jit(jax.value_and_grad(lambda p, x: jnp.sum(fn(p, x, spec)[0] * r), (0, 1)))


@pytest.mark.parametrize("spec_id", list(SPECS))
def test_fast_equals_reference_values_and_grads(spec_id):
    spec = SPECS[spec_id]
    p, x = _init(spec), rand(2, 7, DIM)
    r = rand(2, 7, DIM, seed=5)
    y, y_ref = jax.jit(lambda p, x: moe.apply(p, x, spec)[0])(p, x), moe.reference(p, x, spec)[0]
    close(y, y_ref)
    (_, (gp, gx)), (_, (gp_ref, gx_ref)) = _loss(moe.apply, spec, r)(p, x), _loss(moe.reference, spec, r)(p, x)
    close(gx, gx_ref)
    assert gp.keys() == gp_ref.keys() == p.keys()
    for name in gp_ref:
        close(gp[name], gp_ref[name])


def test_experts_with_no_token_get_zero_gradient():
    """3 tokens, top-1 of 8 experts: at least 5 experts receive nothing; their gradients are exactly zero."""
    spec = moe_spec(experts=8, top_k=1, act="swiglu", hidden=8)
    p, x = _init(spec), rand(1, 3, DIM)
    _, idx = moe.route(moe._router_logits(p, x.reshape(3, DIM)), 1)
    unused = sorted(set(range(8)) - set(np.asarray(idx).ravel().tolist()))
    assert len(unused) >= 5
    _, (gp, _) = _loss(moe.apply, spec, rand(1, 3, DIM, seed=5))(p, x)
    _, (gp_ref, _) = _loss(moe.reference, spec, rand(1, 3, DIM, seed=5))(p, x)
    for name in ("experts.gate_up_proj", "experts.down_proj"):
        close(gp[name], gp_ref[name])
        assert not np.any(np.asarray(gp[name])[unused])


def test_ties_go_to_the_lower_expert_index():
    w, idx = moe.route(jnp.zeros((2, 6)), 3)
    assert np.asarray(idx).tolist() == [[0, 1, 2]] * 2
    _, idx = moe.route(jnp.array([[0.0, 1.0, 1.0, 0.0, 1.0]]), 2, router="sigmoid")
    assert np.asarray(idx).tolist() == [[1, 2]]


def _dots(jaxpr) -> list:
    """Every dot_general / ragged_dot_general of a jaxpr, the sub-jaxprs of loops and custom_vjp included."""
    found = []
    for eqn in jaxpr.eqns:
        if "dot_general" in eqn.primitive.name:
            found.append(eqn)
        for v in eqn.params.values():
            for j in v if isinstance(v, (tuple, list)) else (v,):
                inner = getattr(j, "jaxpr", j)
                if hasattr(inner, "eqns"):
                    found += _dots(inner)
    return found


@pytest.mark.parametrize("fn", ["apply", "grad"])
def test_fast_path_never_runs_every_expert(fn):
    """On CPU the fast path is the tiled loop: no ragged_dot (XLA CPU lowers it densely), as many products for 33
    experts as for 5 (no per-expert loop), none batched over experts (no dense (E, rows, D) operand)."""
    counts = []
    for e in (5, 33):
        spec = moe_spec(experts=e, top_k=2, act="swiglu", hidden=8)
        p, x = _init(spec), rand(2, 16, DIM)
        f = (lambda p, x: moe.apply(p, x, spec)[0]) if fn == "apply" else \
            jax.grad(lambda p, x: jnp.sum(moe.apply(p, x, spec)[0]))
        dots = _dots(jax.make_jaxpr(f)(p, x).jaxpr)
        assert not any(d.primitive.name.startswith("ragged") for d in dots)
        assert not any(len(v.aval.shape) == 3 and e in v.aval.shape for d in dots for v in d.invars)
        counts.append(len(dots))
    assert counts[0] == counts[1]


def test_jit_grad_and_step():
    spec = SPECS["E6-K2-sigmoid-shared-gated"]
    p, x = _init(spec), rand(3, 5, DIM)
    y_full = moe.apply(p, x, spec)[0]
    step = jax.jit(lambda p, xt: moe.step(p, xt, spec, {})[0])
    for t in range(5):  # a batch, and a single row (2 slots of 6 experts)
        close(step(p, x[:, t]), y_full[:, t])
        close(step(p, x[:1, t]), y_full[:1, t])
    g = jax.jit(jax.grad(lambda p: jnp.sum(moe.apply(p, x, spec)[0] ** 2)))(p)
    assert all(np.isfinite(np.asarray(v)).all() for v in g.values())


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("spec_id", list(SPECS))
def test_step_gathered_equals_reference_values_and_grads(spec_id, batch):
    """Decoding's gathered form (B * K <= STEP_SLOTS) against the masked reference: values and gradients."""
    spec = SPECS[spec_id]
    p, x, r = _init(spec), rand(batch, DIM), rand(batch, DIM, seed=5)
    assert batch * spec.top_k <= moe.STEP_SLOTS
    close(jax.jit(lambda p, x: moe.step(p, x, spec, {})[0])(p, x), moe.reference(p, x, spec)[0])
    step = lambda p, x, spec: moe.step(p, x, spec, {})  # noqa: E731
    (_, (gp, gx)), (_, (gp_ref, gx_ref)) = _loss(step, spec, r)(p, x), _loss(moe.reference, spec, r)(p, x)
    close(gx, gx_ref)
    for name in gp_ref:
        close(gp[name], gp_ref[name])


def test_step_past_step_slots_is_grouped(monkeypatch):
    spec = SPECS["E4-K2-swiglu"]
    p, x = _init(spec), rand(3, DIM)
    monkeypatch.setattr(moe, "STEP_SLOTS", 4)  # 3 tokens x top-2 = 6 slots: the grouped form
    jaxpr = jax.make_jaxpr(lambda p, x: moe.step(p, x, spec, {})[0])(p, x).jaxpr
    assert not any(e.primitive.name == "gather" and len(e.outvars[0].aval.shape) == 4 for e in jaxpr.eqns)
    close(moe.step(p, x, spec, {})[0], moe.reference(p, x, spec)[0])


def _eqns(jaxpr) -> list:
    """Every equation of a jaxpr, those of its sub-jaxprs (jit, loops, custom_vjp) included."""
    found = []
    for eqn in jaxpr.eqns:
        found.append(eqn)
        for v in eqn.params.values():
            for j in v if isinstance(v, (tuple, list)) else (v,):
                inner = getattr(j, "jaxpr", j)
                if hasattr(inner, "eqns"):
                    found += _eqns(inner)
    return found


def test_step_reads_only_the_chosen_experts():
    """One token, top-2 of 33 experts: nothing of size E is computed but the router's (1, E) logits and (E, D) weight
    (no (E,) group table, no product over an (E, ...) stack), and as many products as for 5 experts."""
    counts = []
    for e in (5, 33):
        spec = moe_spec(experts=e, top_k=2, act="swiglu", hidden=8)
        p, x = _init(spec), rand(1, DIM)
        eqns = _eqns(jax.make_jaxpr(lambda p, x: moe.step(p, x, spec, {})[0])(p, x).jaxpr)
        sized = {v.aval.shape for q in eqns for v in q.outvars if e in getattr(v.aval, "shape", ())}
        assert sized <= {(1, e), (e, DIM), (DIM, e)}, sized
        counts.append(sum("dot_general" in q.primitive.name for q in eqns))
    assert counts[0] == counts[1]


def test_aux_losses_collected_only_when_asked():
    spec = SPECS["E4-K2-swiglu"]
    p, x = _init(spec), rand(2, 7, DIM)
    ctx = {"aux": []}
    moe.apply(p, x, spec, None, ctx)
    (aux,) = ctx["aux"]
    logits = moe._router_logits(p, x.reshape(-1, DIM))
    _, idx = moe.route(logits, 2)
    counts = np.bincount(np.asarray(idx).ravel(), minlength=4) / 14
    probs = np.asarray(jax.nn.softmax(logits)).mean(0)
    close(aux["load_balance"], 4 * np.sum(counts * probs))
    close(aux["z_loss"], np.mean(np.asarray(jax.nn.logsumexp(logits, axis=-1)) ** 2))
    plain = {}
    moe.apply(p, x, spec, None, plain)
    assert plain == {}


# --- against the torch layer, same weights -------------------------------------------------------------------------
def _torch_pair(spec, seed=0):
    torch = pytest.importorskip("torch")
    tmoe = pytest.importorskip("hybridc_torch.layers.moe")
    torch.manual_seed(seed)
    layer = tmoe.MoE(DIM, spec)
    params = {k: jnp.asarray(v.detach().numpy()) for k, v in layer.state_dict().items()}
    return torch, layer, params


@pytest.mark.parametrize("spec_id", list(SPECS))
def test_init_has_the_torch_names_and_shapes(spec_id):
    _, layer, params = _torch_pair(SPECS[spec_id])
    mine = _init(SPECS[spec_id])
    assert {k: v.shape for k, v in mine.items()} == {k: v.shape for k, v in params.items()}


@pytest.mark.parametrize("spec_id", list(SPECS))
def test_equals_torch_values_grads_aux_and_step(spec_id):
    spec = SPECS[spec_id]
    torch, layer, params = _torch_pair(spec)
    x, r = rand(2, 7, DIM), rand(2, 7, DIM, seed=5)
    xt = torch.tensor(np.asarray(x), requires_grad=True)
    layer.aux = True
    y_t, _ = layer(xt)
    (y_t * torch.tensor(np.asarray(r))).sum().backward()
    def fwd(p, x):
        ctx = {"aux": []}
        return moe.apply(p, x, spec, None, ctx)[0], ctx["aux"][0]

    y, aux = jax.jit(fwd)(params, x)
    close(y, y_t.detach().numpy())
    for k in ("load_balance", "z_loss"):
        close(aux[k], layer.last_aux[k].detach().numpy())
    _, (gp, gx) = _loss(moe.apply, spec, r)(params, x)
    close(gx, xt.grad.numpy())
    for name, prm in layer.named_parameters():
        close(gp[name], prm.grad.numpy())
    step = jax.jit(lambda p, x_t: moe.step(p, x_t, spec, {})[0])
    with torch.no_grad():
        for t in (0, 6):
            close(step(params, x[:1, t]), layer.step(xt[:1, t], {})[0].numpy())
            close(step(params, x[:, t]), layer.step(xt[:, t], {})[0].numpy())


def test_model_aux_losses_equal_torch():
    """`apply(..., return_aux=True)` sums the layers' aux losses as torch's `aux_losses()` does; without MoE: None."""
    torch = pytest.importorskip("torch")
    import sys
    from pathlib import Path

    import hybridc

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from programs import source

    m = hybridc.load(source("feat-moe_shared"))
    torch.manual_seed(0)
    tn = hybridc.build(m).train()
    params = {k: jnp.asarray(v.detach().numpy()) for k, v in tn.state_dict().items()}
    x = np.random.default_rng(0).integers(0, m.vocab, (2, 6)) if m.vocab else rand(2, 6, m.input).__array__()
    y_t = tn(torch.tensor(x))
    net = hybridc.build(m, backend="jax")
    y, aux = jax.jit(lambda p, x: net.apply(p, x, return_aux=True))(params, jnp.asarray(x))
    close(y, y_t.detach().numpy())
    for k, v in tn.aux_losses().items():
        close(aux[k], v.detach().numpy())
    dense = hybridc.build(hybridc.load("layers attn; ffn after=all"), backend="jax")
    assert dense.apply(dense.init(jax.random.PRNGKey(0)), rand(1, 3, dense.ir.input), return_aux=True)[1] is None


# --- against transformers' own MoE blocks, the same weights, fp32 (eager experts loop) -----------------------------
EXPERTS = {"experts.gate_up_proj": "experts.gate_up_proj", "experts.down_proj": "experts.down_proj"}
QWEN3_SHARED = {"shared.gate.weight": "shared_expert.gate_proj.weight", "shared.up.weight": "shared_expert.up_proj.weight",
                "shared.down.weight": "shared_expert.down_proj.weight", "shared_gate.weight": "shared_expert_gate.weight"}
HF_BLOCKS = {  # id: (module, config class, config, block class, our spec, {our name: theirs})
    "jamba": ("jamba", "JambaConfig", dict(intermediate_size=8, num_experts=6, num_experts_per_tok=2),
              "JambaSparseMoeBlock", moe_spec(experts=6, top_k=2, act="swiglu", hidden=8, renorm=False),
              {"router.weight": "router.weight", **EXPERTS}),
    "qwen3_next": ("qwen3_next", "Qwen3NextConfig", dict(moe_intermediate_size=8, num_experts=8, num_experts_per_tok=3,
                                                         norm_topk_prob=True, shared_expert_intermediate_size=12),
                   "Qwen3NextSparseMoeBlock", moe_spec(experts=8, top_k=3, act="swiglu", hidden=8, shared_experts=1,
                                                       shared_hidden=12, shared_gate=True),
                   {"router.weight": "gate.weight", **EXPERTS, **QWEN3_SHARED}),
}


@pytest.mark.parametrize("name", list(HF_BLOCKS))
def test_against_transformers_moe_block(name):
    torch = pytest.importorskip("torch")
    module, config_cls, options, block_cls, spec, names = HF_BLOCKS[name]
    mod = pytest.importorskip(f"transformers.models.{module}.modeling_{module}")
    cfg = getattr(mod, config_cls)(hidden_size=DIM, hidden_act="silu", **options)
    cfg._experts_implementation = "eager"
    torch.manual_seed(0)
    hf = getattr(mod, block_cls)(cfg)
    for prm in hf.parameters():
        torch.nn.init.normal_(prm, std=0.3)
    theirs = {k: v.detach().numpy() for k, v in hf.named_parameters()}
    assert set(names.values()) == set(theirs)
    params = {ours: jnp.asarray(theirs[hf_name]) for ours, hf_name in names.items()}
    assert {k: v.shape for k, v in params.items()} == {k: v.shape for k, v in _init(spec).items()}
    x = rand(2, 9, DIM, seed=3)
    with torch.no_grad():
        want = hf(torch.tensor(np.asarray(x)))
    want = (want[0] if isinstance(want, tuple) else want).numpy()
    close(jax.jit(lambda p, x: moe.apply(p, x, spec)[0])(params, x), want)
    close(moe.reference(params, x, spec)[0], want)


def test_ties_break_as_torch():
    """Equal scores (exact ties, and ties across the k-th place) choose the same experts in both backends."""
    torch = pytest.importorskip("torch")
    troute = pytest.importorskip("hybridc_torch.layers.moe").route
    logits = np.array([[0.0] * 6, [1.0, 2.0, 2.0, 0.5, 2.0, 2.0], [3.0, 1.0, 3.0, 1.0, 1.0, 3.0]], np.float32)
    for router in ("softmax", "sigmoid"):
        for k in (1, 2, 3):
            w, idx = moe.route(jnp.asarray(logits), k, router)
            tw, tidx = troute(torch.tensor(logits), k, router)
            assert np.asarray(idx).tolist() == tidx.tolist()
            close(w, tw.numpy())
