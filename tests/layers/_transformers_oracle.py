"""Mamba and Mamba-2 against transformers' MambaMixer / Mamba2Mixer (their pure-torch paths), with the same weights:
the forward at several lengths, and prefill + one-token steps through a DynamicCache, final states included.

`mixer_tests(cls, specs, build)` returns the tests for one kind; `build(layer, spec) -> (config, hf mixer)` loads
our layer's state_dict into the transformers mixer (the parameter names are the same).
"""
from __future__ import annotations

import pytest

from _torch_contract import DIM, decode, rand_x

torch = pytest.importorskip("torch")


def mixer_tests(cls, specs: dict, build) -> dict:
    def make(spec_id):
        torch.manual_seed(0)
        return cls(DIM, specs[spec_id])

    @pytest.mark.parametrize("length", [1, 7, 33], ids=lambda n: f"L{n}")
    @pytest.mark.parametrize("spec_id", list(specs))
    def test_matches_transformers_forward(spec_id, length):
        layer = make(spec_id)
        _, hf = build(layer, specs[spec_id])
        x = rand_x(length=length)
        with torch.no_grad():
            torch.testing.assert_close(layer(x)[0], hf(x), rtol=1e-5, atol=1e-5)

    @pytest.mark.parametrize("spec_id", list(specs))
    def test_matches_transformers_decoding(spec_id):
        from transformers import DynamicCache

        layer = make(spec_id)
        cfg, hf = build(layer, specs[spec_id])
        x, L1 = rand_x(length=8), 3
        cache = DynamicCache(config=cfg)
        with torch.no_grad():
            hf_y = torch.cat([hf(x[:, :L1], cache_params=cache)] +
                             [hf(x[:, t:t + 1], cache_params=cache) for t in range(L1, 8)], dim=1)
            y, state = decode(layer, x, L1)
        torch.testing.assert_close(y, hf_y, rtol=1e-5, atol=1e-5)
        hf_ssm, hf_conv = cache.layers[0].recurrent_states[0], cache.layers[0].conv_states[0]  # conv: (B, X, K)
        torch.testing.assert_close(state["ssm"], hf_ssm, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(state["conv"], hf_conv[..., 1:], rtol=0, atol=1e-6)

    return {"test_matches_transformers_forward": test_matches_transformers_forward,
            "test_matches_transformers_decoding": test_matches_transformers_decoding}
