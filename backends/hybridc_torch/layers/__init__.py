"""Torch layers, one module per kind; `KINDS` maps an IR kind to its class."""
from .attn import Attention
from .delta_net import DeltaNet
from .ffn import FFN
from .gated_delta_net import GatedDeltaNet
from .griffin_lru import GriffinLRU
from .gru import GRU
from .mamba import Mamba
from .mamba2 import Mamba2
from .rwkv import RWKV7, RWKV7ChannelMix

KINDS = {
    "mamba": Mamba, "mamba2": Mamba2, "gru": GRU, "rwkv": RWKV7, "delta_net": DeltaNet, "gated_delta_net": GatedDeltaNet,
    "griffin_lru": GriffinLRU, "attn": Attention, "mlp": FFN,
}

__all__ = ["KINDS", "Attention", "DeltaNet", "FFN", "GatedDeltaNet", "GriffinLRU", "GRU", "Mamba", "Mamba2", "RWKV7",
           "RWKV7ChannelMix"]
