"""Inference clients: one protocol (``base``), Triton over gRPC and an in-process runner."""
