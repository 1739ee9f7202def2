"""Tests of ``driftline.schema``: migrations and the analysts' SQL (docs/analytics.md, Grafana panels)
on chDB and on the real ClickHouse."""
