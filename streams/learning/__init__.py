"""The online-learning loop inside a pipeline worker: feedback join, drift monitors, drift alerts.

``feedback`` (join), ``lookup`` (ClickHouse fallback), ``observations`` (drift watch), ``label_requests``,
``proposals``, ``request_status``; ``worker.register_learning`` wires them into the Faust app.
"""
