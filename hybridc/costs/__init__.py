"""Exact per-kind cost formulas (parameters, decode state, FLOPs) -- pure Python, no torch/jax.

One module per layer family; each mirrors the torch backend's parameterization in docs/layers.md.
"""
