"""JAX backend for hybridc."""
