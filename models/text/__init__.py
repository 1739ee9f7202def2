"""Text to tensors, once: normalization, character noise, the codec and length-aware batching."""
