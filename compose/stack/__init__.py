"""``driftline stack``: start, health-check and stop the local services, each under ``<run_dir>/<name>/``."""
