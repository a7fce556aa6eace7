"""PyTorch backend for hybridc."""
