"""JAX scan kernels: one module per recurrence, each with a lax.scan reference and `impl=`."""
