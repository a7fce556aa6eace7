"""`rwkv` (RWKV-7 time mixing) and its channel mix (the FFN sub-block of rwkv layers): the torch layers' contract
and cost formulas, the value residual (v_first from the first rwkv layer, lerped towards by later ones), fla's
RWKV7Attention / RWKV7FeedForward as the outside oracle (state_dict, init, forward math, auto ranks), and the JAX
layers against the torch layers with shared weights.

The chain att0 -> ffn0 -> att1 (a first rwkv layer that publishes v_first, a channel mix, a value-residual rwkv
layer) is how the model wires them; it stands for the lone value-residual layer in the parity tests.

Dimension glossary: B batch, L sequence length, D model dim, H heads, K head dim.
"""
from functools import partial
from types import SimpleNamespace as NS

import jax
import jax.numpy as jnp
import pytest
import torch
import torch.nn.functional as F

import _fla_oracle as fo
from _fla_oracle import assert_same_names_shapes, fla_module, needs_fla, state_dict_tests
from _jax_delta_parity import FAST_KEY, JaxLayer, close, jax_handle, jax_layer, parity_tests, to_jax
from _torch_delta_contract import B, D, L, TOL, build, contract_tests, resolved, x_input
from hybridc.kinds import spec_class
from hybridc.kinds._ffn import cmix_hidden as core_cmix_hidden
from hybridc_jax.layers import rwkv as jrwkv
from hybridc_jax.layers.common import layer_norm
from hybridc_torch.layers.rwkv import RWKV7, RWKV7ChannelMix, cmix_hidden
from hybridc_torch.model import run_mixer


def rwkv_spec(value_residual, **kw):
    return NS(kind="rwkv", head_dim=8, decay_rank=8, a_rank=8, v_rank=4, gate_rank=16,
              value_residual=value_residual, **kw)


CMIX = NS(kind="rwkv_cmix", mult=4)
CHAIN = (("att0", rwkv_spec(False)), ("ffn0", CMIX), ("att1", rwkv_spec(True, layer_idx=1, n_layers=2)))
CHAIN_NAME = "rwkv-chain-value-residual"
SPECS = {"rwkv-K8-first": rwkv_spec(False), "rwkv_cmix-mult4": CMIX}
COSTS = {**{n: (D, s) for n, s in SPECS.items()},
         "rwkv-D64-auto-ranks-vr": (64, resolved("rwkv", {"head_dim": 16, "value_residual": True}, 64)),
         "rwkv_cmix-D20-mult3.5": (20, NS(kind="rwkv_cmix", mult=3.5))}


class RwkvChain(torch.nn.Module):
    """Pre-norm residual chain att0 -> ffn0 -> att1 threading v_first, as the model wires it: att0 returns its v as
    v_first, att1 (value_residual) lerps towards it."""

    def __init__(self, dim):
        super().__init__()
        for n, spec in CHAIN:
            setattr(self, n, RWKV7ChannelMix(dim, spec.mult) if spec is CMIX else RWKV7(dim, spec))

    def init_state(self, batch_size, device=None, dtype=torch.float32):
        return {n: getattr(self, n).init_state(batch_size, device, dtype) for n, _ in CHAIN}

    def _run(self, x, state, step):
        v_first, new = None, {}
        for n, _ in CHAIN:
            y, new[n], v_first = run_mixer(getattr(self, n), F.layer_norm(x, x.shape[-1:]),
                                           None if state is None else state[n], None, v_first, step=step)
            x = x + y
        return x, new

    def forward(self, x, state=None, ctx=None):
        y, new = self._run(x, state, step=False)
        return y, None if state is None else new

    def step(self, x_t, state, ctx=None):
        return self._run(x_t, state, step=True)


class AsMixer(torch.nn.Module):
    """An RWKV7 layer as the other layers run: (y, state) (a first rwkv layer takes no v_first; the v_first it
    returns is dropped)."""

    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def init_state(self, batch_size, device=None, dtype=torch.float32):
        return self.layer.init_state(batch_size, device, dtype)

    def forward(self, x, state=None, ctx=None):
        return self.layer(x, state, ctx)[:2]

    def step(self, x_t, state, ctx=None):
        return self.layer.step(x_t, state, ctx)[:2]


def make(name):
    if name == CHAIN_NAME:
        return RwkvChain(D)
    spec = SPECS[name]
    return RWKV7ChannelMix(D, spec.mult) if spec is CMIX else AsMixer(RWKV7(D, spec))


def _jax_cmix(spec):
    return jax_handle(spec, jrwkv.init_channel_mix, jrwkv.channel_mix_init_state, jrwkv.channel_mix_apply,
                      jrwkv.channel_mix_step)


def _jax_chain():
    parts = {n: (_jax_cmix(spec) if spec is CMIX else jax_layer(jrwkv, spec)) for n, spec in CHAIN}
    unit = jnp.ones((D,))

    def run(params, x, state, fn):
        new, v_first = {}, None   # att0 passes its values on as v_first, att1 lerps towards them (as the model does)
        for n, spec in CHAIN:
            sub = {k[len(n) + 1:]: v for k, v in params.items() if k.startswith(n + ".")}
            h, st = layer_norm(x, unit, 0 * unit), None if state is None else state[n]
            if spec is CMIX:
                y, new[n] = getattr(parts[n], fn)(sub, h, state=st)
            else:             # rwkv time mixing: takes and returns v_first
                y, new[n], v_first = getattr(jrwkv, fn)(sub, h, spec, st, None, v_first)
            x = x + y
        return x, (None if state is None and fn == "apply" else new)

    def init(*, key):
        keys = jax.random.split(key, len(parts))
        return {f"{n}.{k}": v for kk, (n, p) in zip(keys, parts.items()) for k, v in p.init(key=kk).items()}

    return JaxLayer(init=init, init_state=lambda b: {n: p.init_state(b) for n, p in parts.items()},
                    apply=lambda params, x, state=None, ctx=None: run(params, x, state, "apply"),
                    step=lambda params, x_t, state, ctx=None: run(params, x_t, state, "step"))


def make_jax(name):
    return _jax_chain() if name == CHAIN_NAME else _jax_cmix(SPECS[name])


globals().update(contract_tests(make, [*SPECS, CHAIN_NAME], states=list(SPECS), costs=COSTS))
# A lone first-layer rwkv would only repeat the chain's att0 in the JAX parity tests (kept out for the time budget).
globals().update(parity_tests(make, make_jax, ["rwkv_cmix-mult4", CHAIN_NAME], vmap=[CHAIN_NAME]))
globals().update(state_dict_tests(make, {
    "rwkv_cmix-mult4": lambda: fla_module(fo.RWKV7FeedForward, hidden_size=D, layer_idx=0, num_hidden_layers=1)}))


# --------------------------------------------------------------------------------------------- value residual
def test_value_residual_needs_v_first():
    m = RWKV7(D, rwkv_spec(True))
    with pytest.raises(RuntimeError, match="v_first"):
        m(x_input())


def test_value_residual_reads_and_first_layer_returns_v_first():
    first, later = build(make, "rwkv-K8-first").layer, build(make, CHAIN_NAME).att1
    _, _, v_first = first(x_input())
    assert v_first.shape == (B, L, D)
    y_a, _, passed_on = later(x_input(2), v_first=v_first)
    assert passed_on is v_first
    y_b = later(x_input(2), v_first=v_first + 1.0)[0]
    assert not torch.allclose(y_a, y_b)
    _, _, v_step = first.step(x_input()[:, 0], first.init_state(B))
    assert v_step.shape == (B, D)


# --------------------------------------------------------------------------------------------- options, costs
def test_resolve_auto_ranks_and_own_ffn():
    assert spec_class("rwkv").resolve({}, 2048)["gate_rank"] == 224
    assert spec_class("rwkv").OWN_FFN["mult"] == 4 and spec_class("rwkv").OWN_FFN["token_shift"]
    assert cmix_hidden(20, 3.5) == core_cmix_hidden(20, 3.5) == 96


def test_resolve_rejects_a_head_dim_not_dividing_dim():
    with pytest.raises(ValueError, match="divisible"):
        spec_class("rwkv").resolve({"head_dim": 48}, 64)


def test_layer_rejects_a_head_dim_not_dividing_dim():
    with pytest.raises(ValueError, match="divisible"):
        RWKV7(30, rwkv_spec(False))


# --------------------------------------------------------------------------------------------- fla parity
@needs_fla
@pytest.mark.parametrize("layer_idx", [0, 2], ids=["layer0", "layer2of4"])
def test_state_dict_and_init_match_fla(layer_idx):
    torch.manual_seed(0)
    ours = RWKV7(D, rwkv_spec(layer_idx > 0, layer_idx=layer_idx, n_layers=4))
    ref = fla_module(fo.RWKV7Attention, hidden_size=D, head_dim=8, decay_low_rank_dim=8, a_low_rank_dim=8,
                     v_low_rank_dim=4, gate_low_rank_dim=16, layer_idx=layer_idx, num_hidden_layers=4)
    a, b = assert_same_names_shapes(ours, ref)
    orthogonal = {"r_proj.weight": 1.0, "k_proj.weight": 0.1, "v_proj.weight": 1.0}
    for k in a:
        if k in orthogonal or k.endswith("lora.2.weight"):   # random orthogonal (fla draws its RNG in another order)
            gain = orthogonal.get(k, 0.1)
            torch.testing.assert_close(a[k] @ a[k].T if a[k].shape[0] <= a[k].shape[1] else a[k].T @ a[k],
                                       gain ** 2 * torch.eye(min(a[k].shape)), atol=1e-5, rtol=0)
        else:
            torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=0, msg=k)


def _fla_rwkv_forward(m, x, v_first=None):
    """fla RWKV7Attention.forward (fuse_norm=False) transcribed with fla's CPU reference pieces."""
    delta = fo.token_shift_ref(x)
    xr, xw, xk, xv, xa, xg = fo.torch_addcmul_rwkv7(x, delta, m.x_r, m.x_w, m.x_k, m.x_v, m.x_a, m.x_g)
    r, k, v = m.r_proj(xr), m.k_proj(xk), m.v_proj(xv)
    w = -0.6065306597126334 * m.w_lora(xw).sigmoid()
    v_raw = v
    v = v if v_first is None else torch.lerp(v, v_first, m.v_lora(xv).sigmoid())
    a, g = m.a_lora(xa).sigmoid(), m.g_lora(xg)
    heads = lambda t: t.unflatten(-1, (m.num_heads, m.head_dim))   # noqa: E731
    kk = F.normalize(heads(k * m.k_k), dim=-1, p=2.0)
    k = fo.k_update_ref(k, a, m.k_a)
    r, w, k, a, v = map(heads, (r, w, k, a, v))
    tr = lambda t: t.transpose(1, 2)   # noqa: E731  dplr_recurrence uses (B, H, T, K) and scales q by K**-0.5
    o, _ = fo.dplr_recurrence(tr(r * m.head_dim ** 0.5), tr(k), tr(v), tr(-kk), tr(kk * a), tr(w))
    o = m.g_norm(tr(o).reshape(-1, D)).view(B, -1, D)
    return m.o_proj(fo.gate_output_correction_ref(o, r, k, m.r_k, v, g)), v_raw


@needs_fla
def test_matches_fla_forward_math_with_value_residual():
    chain = build(make, CHAIN_NAME)
    x = x_input()
    with torch.no_grad():
        y0_ref, v_first = _fla_rwkv_forward(chain.att0, x)
        y0, _, ours = chain.att0(x)
        torch.testing.assert_close(y0, y0_ref, **TOL)
        torch.testing.assert_close(ours, v_first, atol=0, rtol=0)
        y1_ref, _ = _fla_rwkv_forward(chain.att1, x, v_first=v_first)
        torch.testing.assert_close(chain.att1(x, v_first=ours)[0], y1_ref, **TOL)
        ffn = chain.ffn0
        sqrelu = lambda t: F.relu(t).square()   # noqa: E731  fla's sqrelu_fwd (which is torch.compile'd: slow)
        ref = ffn.value(sqrelu(ffn.key(x.addcmul(fo.token_shift_ref(x), ffn.x_k))))
        torch.testing.assert_close(ffn(x)[0], ref, **TOL)


@needs_fla
@pytest.mark.parametrize("dim,head_dim", [(256, 64), (512, 128), (96, 32)], ids=lambda v: str(v))
def test_auto_ranks_follow_fla(dim, head_dim):
    ref = fla_module(fo.RWKV7Attention, hidden_size=dim, head_dim=head_dim, layer_idx=1, num_hidden_layers=2)
    got = spec_class("rwkv").resolve({"head_dim": head_dim, "value_residual": True}, dim)
    assert (got["decay_rank"], got["a_rank"], got["v_rank"], got["gate_rank"]) == \
        (ref.decay_low_rank_dim, ref.a_low_rank_dim, ref.v_low_rank_dim, ref.gate_low_rank_dim)


# --------------------------------------------------------------------------------------------- JAX
def test_jax_init_matches_torch_layer2of5():
    """Everything but the random (orthogonal) matrices equals torch's init; orthogonal ones have torch's gains."""
    layer_idx, n_layers = 2, 5   # depth-dependent curves away from their layer-0 special cases
    spec = rwkv_spec(True, layer_idx=layer_idx, n_layers=n_layers)
    sd = to_jax(RWKV7(D, spec).state_dict())
    cm = to_jax(RWKV7ChannelMix(D, 4, layer_idx=layer_idx, n_layers=n_layers).state_dict())
    cspec = NS(mult=4, layer_idx=layer_idx, n_layers=n_layers)
    params, cparams = jax.jit(lambda k: (jrwkv.init(D, spec, key=k), jrwkv.init_channel_mix(D, cspec, key=k)))(
        FAST_KEY)
    for k in sd:
        if k in ("r_proj.weight", "k_proj.weight", "v_proj.weight") or k.endswith("lora.2.weight"):
            w, wt = params[k], sd[k]   # W W^T (or W^T W) = gain^2 I on the smaller side, same gain as torch's
            gram = (lambda a: a @ a.T) if w.shape[0] <= w.shape[1] else (lambda a: a.T @ a)
            close(gram(w), gram(wt), atol=1e-5, rtol=1e-5)
        else:
            close(params[k], sd[k], atol=0, rtol=0)
    close(cparams["x_k"], cm["x_k"], atol=0, rtol=0)
    close(cparams["key.weight"].T @ cparams["key.weight"], jnp.eye(D), atol=1e-5, rtol=0)   # (F, D), F > D


def _abstract_params(spec):
    return jax.eval_shape(lambda key: jrwkv.init(D, spec, key=key), jax.random.PRNGKey(0))


def test_jax_value_residual_needs_v_first():
    spec = rwkv_spec(True)
    with pytest.raises(RuntimeError, match="v_first"):
        jax.eval_shape(lambda p, x: jrwkv.apply(p, x, spec), _abstract_params(spec), jnp.zeros((B, 3, D)))


def test_jax_first_layer_publishes_v_first_in_apply_and_step():
    """(Values through v_first are covered by the rwkv-chain parity tests.)"""
    spec = rwkv_spec(False)

    def publish(fn, params, x, *state):
        return fn(params, x, spec, *state)[-1]   # the v_first it passes on

    p = _abstract_params(spec)
    assert jax.eval_shape(partial(publish, jrwkv.apply), p, jnp.ones((B, 3, D))).shape == (B, 3, D)
    st = jrwkv.init_state(D, spec, B)
    assert jax.eval_shape(partial(publish, jrwkv.step), p, jnp.ones((B, D)), st).shape == (B, D)


def test_jax_rejects_a_head_dim_not_dividing_dim():
    with pytest.raises(ValueError, match="divisible"):
        jrwkv.init(D, NS(**{**vars(rwkv_spec(False)), "head_dim": 12}), key=jax.random.PRNGKey(0))
