"""The online-learning loop inside a pipeline worker: feedback join, drift monitors, drift alerts.

- ``LearningConfig`` lives in ``driftline.settings`` (``DRIFTLINE_LEARNING__*``: grace period, memory bounds),
- ``lookup``: batched ClickHouse ``labels`` lookup for feedback the worker cannot join from memory,
- ``feedback``: ``FeedbackStage`` (validate, join, pending-with-grace, dead letters), Faust-free,
- ``observations``: ``ObservationBatch`` + ``DriftWatch`` (one ``DriftMonitor`` per task, checkpointed),
- ``sinks``: ClickHouse ``feedback`` / ``drift_events`` sinks on the one ``BatchingSink`` base,
- ``worker``: ``register_learning(app, ...)``, the Faust agents, timer and ``/learning`` view.
"""
