"""Benchmarks: one runnable module each (``python -m bench.<name>``, results in ``bench/results/``).

Shared helpers: ``bench.timing`` (timing a model as serving calls it, percentiles) and ``bench.charts``.
"""
