"""JAX kernels: `lax.scan` references with the torch kernels' entry points, signatures and layouts."""
