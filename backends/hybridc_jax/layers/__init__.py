"""JAX layers, one module per IR kind (mirrors hybridc_torch/layers): ``layers/<kind>.py`` holds ``init``,
``init_state``, ``apply`` and ``step`` and declares what it runs for ``describe --kernels``: ``OP`` (an op of
`hybridc_jax.ops.OPS`) or ``KERNEL = (name, why)``. `hybridc_jax.model.kind_module` finds a kind's module by that
name, so a new kind needs no table edit. Shared pieces: ``common.py`` (linears, norms, parameter sub-dicts),
``_conv.py`` (the causal depthwise convolutions), ``_shortconv.py`` (the DeltaNet family's short convolution) and
``ffn.py`` (the FFN sub-block; the ``mlp`` kind reuses it)."""
