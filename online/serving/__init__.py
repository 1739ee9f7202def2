"""What serves: the model registry, Triton hot swap, and the one ``serve_version`` operation."""
