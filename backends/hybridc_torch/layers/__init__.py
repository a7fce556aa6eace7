"""Torch layers, one module per IR kind: ``layers/<kind>.py`` (mamba, mamba2, gru, rwkv, delta_net,
gated_delta_net, griffin_lru, attn, mlp).

Each kind's module declares, by convention (read by ``model.py`` and ``plan.py``; adding a kind edits neither):
    LAYER    its nn.Module class, built as ``LAYER(dim, spec, impl=...)``
    OP       the name of the recurrence it runs (an op of ``hybridc_torch.ops``), or
    KERNEL   (name, why) for a kind that runs one fixed thing (``(None, "no recurrence")`` for none)
Shared pieces: ``ffn.py`` (the FFN sub-block), ``_conv.py`` (the causal depthwise conv), ``_shortconv.py`` (the
DeltaNet family's short convolutions).
"""
