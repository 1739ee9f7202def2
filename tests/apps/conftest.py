"""Tests of ``driftline.apps``: the CLI (``config show``), the dashboard and the demo (units and the
quick demo end to end)."""
