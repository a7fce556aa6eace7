"""FalconMamba (TII, transformers' `FalconMambaForCausalLM`): Mamba (`mamba.py`, which holds the shared program,
tensor names and config) with weightless RMSNorms on dt, B and C after x_proj at `mixer_rms_eps`.

.hyb: Mamba's, with `mamba ... inner_norm=plain eps=<mixer_rms_eps>` (the block and final norms stay at
`layer_norm_epsilon`). Tensors: Mamba's names (the inner norms have no weights).
"""
from __future__ import annotations

from . import mamba
from ._common import num

MODEL_TYPE = "falcon_mamba"
HF_CLASS = "FalconMambaForCausalLM"
IGNORED = dict(mamba.IGNORED, pad_token_id="a token id (FalconMambaModel's embedding has no padding_idx)")


def to_hyb(cfg) -> str:
    return mamba.program(cfg, f" inner_norm=plain eps={num(cfg.get('mixer_rms_eps', 1e-6))}")


tensors = mamba.tensors


def to_config(model) -> dict:
    cfg = mamba.config(model, "FalconMamba", "plain")
    return cfg | {"mixer_rms_eps": model.layers[0].mixers[0].eps}
