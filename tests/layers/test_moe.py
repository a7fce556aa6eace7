"""The mixture-of-experts FFN (`layers/moe.py`) and the `moe` kind: the grouped fast forms against the readable
reference (values and gradients, experts that get no token), top-k tie-breaking, decoding, the aux losses against
transformers' `load_balancing_loss_func`, and the math against transformers' own blocks with the same weights (fp32,
1e-5): JambaSparseMoeBlock (softmax, no renorm), Qwen3NextSparseMoeBlock (renorm, shared expert with a sigmoid gate;
router logits too) and GraniteMoeHybridMoE (top-k logits, then softmax), each on its eager experts loop."""
from types import SimpleNamespace as NS

import pytest
import torch

from _torch_contract import contract_tests
from hybridc.kinds import spec_class
from hybridc.kinds._ffn import FFNSpec
from hybridc_torch.layers.moe import LAYER, MoE, route

DIM = 16


def kind_spec(**options) -> NS:
    """The resolved `moe` kind spec (experts default 8), as the backends receive it."""
    cls = spec_class("moe")
    return NS(**cls(**cls.resolve({"bias": "auto", **options}, DIM)).model_dump())


KIND_SPECS = {
    "moe-E8-K2-gelu": kind_spec(hidden=12),
    "moe-E4-K2-swiglu-shared-gated": kind_spec(experts=4, act="swiglu", hidden=8, shared_experts=1, shared_gate=True),
    "moe-E6-K3-sigmoid-norenorm": kind_spec(experts=6, top_k=3, act="silu", gated=True, hidden=8, router="sigmoid",
                                            renorm=False),
}
# The torch layer contract of the `moe` kind (decoding, causality, dtypes, init); a model-wide impl= it does not know
# (a recurrence's kernel choice) leaves it on its own choice, so no unknown-impl check.
globals().update(contract_tests(LAYER, KIND_SPECS, main="moe-E4-K2-swiglu-shared-gated", impl=False))


def moe_spec(**options) -> NS:
    """The resolved FFN spec with experts (bias settled by the core), as the backends receive it."""
    return NS(**FFNSpec(**options).model_dump())


SPECS = {
    "E4-K2-swiglu": moe_spec(experts=4, top_k=2, act="swiglu", hidden=8),
    "E8-K3-gelu-plain-norenorm": moe_spec(experts=8, top_k=3, act="gelu", hidden=12, renorm=False),
    "E6-K2-sigmoid-shared-gated": moe_spec(experts=6, top_k=2, act="silu", gated=True, hidden=8, router="sigmoid",
                                           shared_experts=2, shared_gate=True),
    "E5-K1-relu2-odd-width": moe_spec(experts=5, top_k=1, act="relu2", hidden=7, shared_experts=1, shared_hidden=5),
}


def rand_x(batch=2, length=7, dim=DIM, seed=1):
    return torch.randn(batch, length, dim, generator=torch.Generator().manual_seed(seed))


def make(spec, seed=0, dim=DIM, impl="auto"):
    torch.manual_seed(seed)
    return MoE(dim, spec, impl=impl)


def grads(layer, x, impl):
    """(y, {name: grad}, x.grad) of sum(y * r) for a fixed random r, through `impl`."""
    layer.zero_grad()
    x = x.clone().requires_grad_()
    layer.impl = impl
    y, _ = layer(x)
    (y * torch.randn(y.shape, generator=torch.Generator().manual_seed(5))).sum().backward()
    return y.detach(), {n: p.grad.clone() for n, p in layer.named_parameters()}, x.grad


@pytest.mark.parametrize("impl", ["auto", "loop"])
@pytest.mark.parametrize("spec_id", list(SPECS))
def test_fast_equals_reference_values_and_grads(spec_id, impl):
    layer = make(SPECS[spec_id])
    x = rand_x()
    y_ref, g_ref, gx_ref = grads(layer, x, "reference")
    y, g, gx = grads(layer, x, impl)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(gx, gx_ref, rtol=1e-5, atol=1e-6)
    for name in g_ref:
        torch.testing.assert_close(g[name], g_ref[name], rtol=1e-5, atol=1e-6, msg=name)
    with torch.no_grad():  # the inference form (expert by expert, no autograd)
        torch.testing.assert_close(layer(x)[0], y_ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("impl", ["auto", "loop"])
def test_experts_without_tokens(impl):
    """Router rows of experts 1 and 3 set very low: they get no token; their weights get exactly zero gradient,
    the fast forms equal the reference."""
    layer = make(moe_spec(experts=6, top_k=2, act="swiglu", hidden=8))
    with torch.no_grad():
        layer.router.weight[[1, 3]] = -100 * layer.router.weight[[1, 3]].abs().sum(-1, keepdim=True) / DIM
    x = rand_x().abs()  # positive inputs: the negative rows always score lowest
    _, idx = route(layer.router_logits(x.reshape(-1, DIM)), 2)
    assert not torch.isin(idx, torch.tensor([1, 3])).any()
    y_ref, g_ref, gx_ref = grads(layer, x, "reference")
    y, g, gx = grads(layer, x, impl)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(gx, gx_ref, rtol=1e-5, atol=1e-6)
    for name in g_ref:
        torch.testing.assert_close(g[name], g_ref[name], rtol=1e-5, atol=1e-6, msg=name)
    for name in ("experts.gate_up_proj", "experts.down_proj"):
        assert not g[name][[1, 3]].any(), name
    with torch.no_grad():
        torch.testing.assert_close(layer(x)[0], y_ref, rtol=1e-5, atol=1e-6)


def test_all_tokens_to_one_expert():
    """top_k=1 and every token on expert 2: one group holds every row."""
    layer = make(moe_spec(experts=4, top_k=1, act="swiglu", hidden=8))
    with torch.no_grad():
        layer.router.weight.zero_()
        layer.router.weight[2] = 1.0
    x = rand_x().abs()
    y_ref, g_ref, _ = grads(layer, x, "reference")
    y, g, _ = grads(layer, x, "auto")
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(g["experts.gate_up_proj"], g_ref["experts.gate_up_proj"], rtol=1e-5, atol=1e-6)


def test_ties_go_to_the_lower_expert_index():
    logits = torch.tensor([[0.0, 1.0, 1.0, 1.0, 0.5], [2.0, 2.0, 2.0, 2.0, 2.0], [0.0, 0.0, 3.0, 0.0, 3.0]])
    for router in ("softmax", "sigmoid"):
        _, idx = route(logits, 2, router)
        assert idx.tolist() == [[1, 2], [0, 1], [2, 4]]
    # a whole layer: a zero router makes every expert tie, so every token takes experts 0..K-1
    layer = make(moe_spec(experts=5, top_k=3, act="swiglu", hidden=8))
    with torch.no_grad():
        layer.router.weight.zero_()
    _, idx = route(layer.router_logits(rand_x().reshape(-1, DIM)), 3)
    assert (idx == torch.tensor([0, 1, 2])).all()


@pytest.mark.parametrize("batch", [1, 3], ids=lambda b: f"B{b}")
@pytest.mark.parametrize("spec_id", list(SPECS))
def test_step_equals_forward(spec_id, batch):
    """Decoding is per token: step (gathering the chosen experts) equals the forward at every position."""
    layer = make(SPECS[spec_id])
    x = rand_x(batch=batch, length=4)
    y, state = layer(x, layer.init_state(batch))
    assert state == {}
    for t in range(4):
        y_t, state = layer.step(x[:, t], state)
        torch.testing.assert_close(y_t, y[:, t], rtol=1e-5, atol=1e-6)


def test_router_runs_in_fp32_and_bf16_forward():
    layer = make(SPECS["E4-K2-swiglu"]).to(torch.bfloat16)
    x = rand_x().to(torch.bfloat16)
    assert layer.router_logits(x.reshape(-1, DIM)).dtype == torch.float32
    y, _ = layer(x)
    y_ref, _ = make(SPECS["E4-K2-swiglu"], impl="reference").to(torch.bfloat16)(x)
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), y_ref.float(), rtol=2e-2, atol=2e-2)


def test_moe_kind_layer_and_costs():
    """The `moe` kind: LAYER is the MoE; the core's total and active counts equal the module's."""
    cls = spec_class("moe")
    spec = NS(**cls(**cls.resolve({"bias": "auto", "hidden": 8, "shared_experts": 1, "shared_gate": True}, DIM))
              .model_dump())
    assert LAYER is MoE
    layer = LAYER(DIM, spec)
    n = sum(p.numel() for p in layer.parameters())
    core = cls(**{k: v for k, v in vars(spec).items()})
    assert core.params(DIM) == n
    per_expert = layer.experts.down_proj[0].numel() + layer.experts.in_proj[0].numel()
    assert core.active_params(DIM) == n - (spec.experts - spec.top_k) * per_expert
    assert layer.init_state(2) == {}


def test_aux_losses_only_when_asked_and_match_transformers():
    mixtral = pytest.importorskip("transformers.models.mixtral.modeling_mixtral")
    layer = make(moe_spec(experts=8, top_k=2, act="swiglu", hidden=8))
    x = rand_x(batch=3, length=11)
    layer.eval()
    layer(x)
    assert layer.last_aux is None
    layer.train()
    layer(x)
    logits = layer.router_logits(x.reshape(-1, DIM))
    want = mixtral.load_balancing_loss_func((logits,), 8, 2)
    torch.testing.assert_close(layer.last_aux["load_balance"], want, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(layer.last_aux["z_loss"], (torch.logsumexp(logits, -1) ** 2).mean())
    layer.last_aux["load_balance"].backward()  # differentiable through the router probabilities
    assert layer.router.weight.grad.abs().sum() > 0
    layer.eval()
    layer(x)
    assert layer.last_aux is None
    layer.aux = True  # the flag: aux losses in eval mode too
    layer(x)
    assert set(layer.last_aux) == {"load_balance", "z_loss"}


# --- against transformers' own MoE blocks, the same weights, fp32 ---

def _eager(config):
    config._experts_implementation = "eager"  # the eager loop (a standalone block would warn and fall back to it)
    return config


def _copy(ours, hf, names: dict):
    """ours[name] <- hf[names[name]] for every parameter of ours; every hf parameter used."""
    theirs = dict(hf.named_parameters())
    assert set(names.values()) == set(theirs) and set(names) == {n for n, _ in ours.named_parameters()}
    with torch.no_grad():
        for name, p in ours.named_parameters():
            p.copy_(theirs[names[name]])


EXPERTS = {"experts.gate_up_proj": "experts.gate_up_proj", "experts.down_proj": "experts.down_proj"}


def _check(ours, hf, length=9):
    x = rand_x(batch=2, length=length, seed=3)
    with torch.no_grad():
        want = hf(x)
        for impl in ("auto", "loop", "reference"):
            ours.impl = impl
            torch.testing.assert_close(ours(x)[0], want, rtol=1e-5, atol=1e-5, msg=impl)
    return x


def test_against_jamba_sparse_moe_block():
    mod = pytest.importorskip("transformers.models.jamba.modeling_jamba")
    cfg = _eager(mod.JambaConfig(hidden_size=DIM, intermediate_size=8, num_experts=6, num_experts_per_tok=2,
                                 hidden_act="silu"))
    torch.manual_seed(0)
    hf = mod.JambaSparseMoeBlock(cfg)
    for p in hf.parameters():
        torch.nn.init.normal_(p, std=0.3)
    ours = MoE(DIM, moe_spec(experts=6, top_k=2, act="swiglu", hidden=8, renorm=False))
    _copy(ours, hf, {"router.weight": "router.weight", **EXPERTS})
    _check(ours, hf)


def test_against_qwen3_next_sparse_moe_block():
    mod = pytest.importorskip("transformers.models.qwen3_next.modeling_qwen3_next")
    cfg = _eager(mod.Qwen3NextConfig(hidden_size=DIM, moe_intermediate_size=8, num_experts=8, num_experts_per_tok=3,
                                     norm_topk_prob=True, shared_expert_intermediate_size=12, hidden_act="silu"))
    torch.manual_seed(0)
    hf = mod.Qwen3NextSparseMoeBlock(cfg)
    for p in hf.parameters():
        torch.nn.init.normal_(p, std=0.3)
    ours = MoE(DIM, moe_spec(experts=8, top_k=3, act="swiglu", hidden=8, renorm=True, shared_experts=1,
                             shared_hidden=12, shared_gate=True))
    _copy(ours, hf, {"router.weight": "gate.weight", **EXPERTS, "shared.gate.weight": "shared_expert.gate_proj.weight",
                     "shared.up.weight": "shared_expert.up_proj.weight",
                     "shared.down.weight": "shared_expert.down_proj.weight",
                     "shared_gate.weight": "shared_expert_gate.weight"})
    x = _check(ours, hf)
    with torch.no_grad():
        torch.testing.assert_close(ours.router_logits(x.reshape(-1, DIM)), hf.gate(x.reshape(-1, DIM))[0],
                                   rtol=1e-5, atol=1e-5)


def test_against_granite_moe_hybrid_moe():
    mod = pytest.importorskip("transformers.models.granitemoehybrid.modeling_granitemoehybrid")
    cfg = _eager(mod.GraniteMoeHybridConfig(hidden_size=DIM, intermediate_size=8, num_local_experts=5,
                                            num_experts_per_tok=2, hidden_act="silu", mamba_n_heads=4,
                                            mamba_d_head=8))
    torch.manual_seed(0)
    hf = mod.GraniteMoeHybridMoE(cfg)
    for p in hf.parameters():
        torch.nn.init.normal_(p, std=0.3)
    ours = MoE(DIM, moe_spec(experts=5, top_k=2, act="swiglu", hidden=8, renorm=True))
    _copy(ours, hf, {"router.weight": "router.weight", **EXPERTS})
    _check(ours, hf)


def test_a_token_does_not_depend_on_the_others_bit_for_bit():
    """Groups padded to a multiple of ROWS rows: changing the later tokens (so the experts' group sizes) leaves the
    earlier tokens' outputs equal bit for bit (the models' causality test), as for a dense FFN."""
    layer = make(moe_spec(experts=8, top_k=2, act="swiglu", hidden=32))  # groups of 1-3 rows (unpadded: 4 differ)
    x = rand_x(batch=2, length=13)
    with torch.no_grad():
        y, _ = layer(x)
        for n in range(1, 13):
            x2 = x.clone()
            x2[:, n:] = torch.randn(x2[:, n:].shape, generator=torch.Generator().manual_seed(n))
            assert torch.equal(layer(x2)[0][:, :n], y[:, :n])


def test_model_aux_losses_summed_over_layers():
    """`HybridModel.aux_losses()`: None without MoE layers or in eval mode; in training the layers' losses summed."""
    import hybridc

    dense = hybridc.build(hybridc.load("dim 16\nlayers gru attn\n"), backend="torch")
    dense.train()
    dense(rand_x())
    assert dense.aux_losses() is None
    net = hybridc.build(hybridc.load("dim 16\nlayers gru attn moe\nffn experts=4 top_k=2 act=swiglu hidden=8\n"),
                        backend="torch")
    moes = [m for m in net.modules() if isinstance(m, MoE)]
    assert len(moes) == 2  # the FFN after attn and the standalone layer
    net.eval()
    net(rand_x())
    assert net.aux_losses() is None
    net.train()
    net(rand_x())
    aux = net.aux_losses()
    assert set(aux) == {"load_balance", "z_loss"}
    for key in aux:
        torch.testing.assert_close(aux[key], sum(m.last_aux[key] for m in moes))
    (aux["load_balance"] + 1e-3 * aux["z_loss"]).backward()
    assert all(m.router.weight.grad is not None for m in moes)
