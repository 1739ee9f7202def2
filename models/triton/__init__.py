"""Triton: export a version into the model repository, the python-backend model, shadow models."""
