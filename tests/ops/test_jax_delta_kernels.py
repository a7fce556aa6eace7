"""Parity of the JAX delta rule / gated delta rule / RWKV-7 kernels (and their steps) with the torch reference kernels
on the same random inputs. Everything JAX runs under jax.jit (eager dispatch of small ops is slower than compiling on a
2-core box).

Dimension glossary: B batch, T sequence length, H heads, K key head dim, V value head dim.
"""
from __future__ import annotations

import importlib
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

# the op packages (entry point, step, reference); `from hybridc_jax.ops import rwkv7` gives the entry callable itself
jdr, jgdr, jrk = (importlib.import_module(f"hybridc_jax.ops.{op}")
                  for op in ("delta_rule", "gated_delta_rule", "rwkv7"))
tdr, tgdr, trk = (importlib.import_module(f"hybridc_torch.ops.{op}")
                  for op in ("delta_rule", "gated_delta_rule", "rwkv7"))

B = 2
TOL = dict(atol=1e-4, rtol=1e-4)


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    """Tiny tensors: intra-op threads only add contention on a loaded 2-core box."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def close(a, b, **tol):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), **(tol or TOL))


# --------------------------------------------------------------------------------------------- kernels vs torch
H, K, V = 2, 8, 16


def _kernel_inputs(T, seed=0):
    """Well-conditioned torch inputs: unit-norm q/k, beta in (0,1), log decays in (-e^-0.5, 0)."""
    g = torch.Generator().manual_seed(seed)

    def rn(*shape):
        return torch.randn(*shape, generator=g)
    kk = F.normalize(rn(B, T, H, K), dim=-1)
    return dict(q=F.normalize(rn(B, T, H, K), dim=-1), k=F.normalize(rn(B, T, H, K), dim=-1), v=rn(B, T, H, V),
                g=F.logsigmoid(rn(B, T, H)), beta=torch.sigmoid(rn(B, T, H)),
                w=-0.6065 * torch.sigmoid(rn(B, T, H, K)), a=-kk, b=kk * torch.sigmoid(rn(B, T, H, K)),
                h0=0.5 * rn(B, H, K, V))


KERNELS = {   # name: (torch module, jax module, entry point, argument names, kwargs)
    "delta_rule": (tdr, jdr, "delta_rule", ("q", "k", "v", "beta"), {}),
    "gated_delta_rule": (tgdr, jgdr, "gated_delta_rule", ("q", "k", "v", "g", "beta"), {}),
    "rwkv7": (trk, jrk, "rwkv7", ("q", "w", "k", "v", "a", "b"), {"scale": K ** -0.5}),
}


@pytest.mark.parametrize("T,init", [(1, True), (7, False), (7, True)], ids=["T1-h0", "T7-zero", "T7-h0"])
@pytest.mark.parametrize("kernel", list(KERNELS))
def test_kernel_matches_torch_reference(kernel, T, init):
    tmod, jmod, entry, names, kw = KERNELS[kernel]
    x = _kernel_inputs(T)
    h0 = x["h0"] if init else None
    o_t, S_t = getattr(tmod, entry)(*(x[n] for n in names), initial_state=h0, output_final_state=True, **kw)
    fn = jax.jit(partial(getattr(jmod, entry), output_final_state=True, impl="reference", **kw))
    o, S = fn(*(jnp.asarray(x[n].numpy()) for n in names), initial_state=None if h0 is None else jnp.asarray(h0))
    assert o.shape == (B, T, H, V) and S.shape == (B, H, K, V) and S.dtype == jnp.float32
    close(o, o_t, atol=1e-5, rtol=1e-5)
    close(S, S_t, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kernel", list(KERNELS))
def test_kernel_step_matches_torch_step_and_edge_cases(kernel):
    tmod, jmod, entry, names, kw = KERNELS[kernel]
    x = _kernel_inputs(1, seed=3)
    args_t = [x[n][:, 0] for n in names]
    o_t, S_t = getattr(tmod, f"{entry}_step")(*args_t, x["h0"], **kw)
    o, S = jax.jit(partial(getattr(jmod, f"{entry}_step"), **kw))(*(jnp.asarray(a.numpy()) for a in args_t),
                                                                   jnp.asarray(x["h0"].numpy()))
    close(o, o_t, atol=1e-5, rtol=1e-5)
    close(S, S_t, atol=1e-5, rtol=1e-5)
    empty = [jnp.asarray(t[:, :0].numpy()) for t in (x[n] for n in names)]
    o0, S0 = getattr(jmod, entry)(*empty, initial_state=jnp.asarray(x["h0"].numpy()), output_final_state=True, **kw)
    assert o0.shape == (B, 0, H, V)
    close(S0, x["h0"], atol=0, rtol=0)
    assert getattr(jmod, entry)(*empty, **kw)[1] is None
    with pytest.raises(ValueError, match="valid choices: 'auto', 'reference'"):
        getattr(jmod, entry)(*empty, impl="triton")
