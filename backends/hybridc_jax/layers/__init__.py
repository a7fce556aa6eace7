"""JAX layers, one module per kind (mirrors hybridc_torch/layers); see model.MODULES for the kind -> module map."""
