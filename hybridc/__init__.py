"""hybridc core."""
