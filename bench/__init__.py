"""Benchmarks against the live stack (results in ``bench/results/``) and the harness the stack tests share."""
