"""Tests of ``driftline.compose`` (compose/): the local stack - lifecycle, Kafka, ClickHouse, Triton
and the production compose file. Fixtures shared by every floor live in ``tests/conftest.py``."""
