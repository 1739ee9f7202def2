"""Applications built on the library: the ``driftline`` CLI, the demo and the dashboard."""
