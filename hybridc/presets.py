"""Named starting points: `preset NAME` loads one of these texts; later statements override it.

The first four are the seeds' `HybridBuilder.preset/1`; the rest follow the published models.
"""
from __future__ import annotations

PRESETS: dict[str, str] = {
    # Nemotron-H: 90:10 Mamba:attention
    "nemotron_h": "model nemotron_h\n10 layers ratio 9:1 backbone mamba\ndim 256\nattn heads=4 head_dim=64\ndropout 0.1\n",
    # Jamba: 3:1 interleaved (the seeds' 6 layers, attention every 3)
    "jamba": "model jamba\n6 layers every 3 backbone mamba\n",
    # Hymba-style: every block runs SSM and attention side by side
    "parallel": "model parallel\n6 layers\nparallel\n",
    # backbone-heavy with rare attention
    "minimal_attn": "model minimal_attn\n12 layers ratio 11:1\n",
    # the seeds' Hymba defaults (Edifice.SSM.Hymba)
    "hymba": "model hymba\n4 layers\nparallel meta_tokens=4\nmamba state=16\nattn heads=4\ndropout 0\n",
    # Zamba: a Mamba backbone with one shared attention block reused every few layers
    "zamba": "model zamba\n12 layers every 4 backbone mamba\nshare attn\n",
    # Samba: Mamba and sliding-window attention alternating, an MLP after every mixer
    "samba": "model samba\nlayers (mamba attn) x2\nattn window=2048\nffn after=all\n",
    # Griffin / RecurrentGemma: (recurrent, recurrent, local attention) with MQA, an MLP after every block
    "griffin": "model griffin\nlayers (griffin_lru griffin_lru attn) x2\nattn window=2048 kv_heads=1\nffn after=all\n",
}


def preset_text(name: str) -> str:
    """The text of a preset by its name or its `<preset NAME>` source name."""
    key = name[len("<preset "):-1] if name.startswith("<preset ") else name
    return PRESETS[key]
