"""driftline: streaming NLP inference that keeps learning while it runs.

One import namespace for the whole project. The code lives in the design's top-level folders and
is mapped under ``driftline`` by ``pyproject.toml`` (``package-dir``)::

    driftline             ground floor: settings, client factories, record shapes, logging
    driftline.compose     runs the services (local stack; compose/)
    driftline.models      encoders, training, export, engines, serving, inference clients (models/)
    driftline.online      drift detectors, registry, updater, promotion (online/)
    driftline.streams     Faust stream processing: agents, sinks, checkpoint (streams/)
    driftline.apps        applications: CLI, demo, dashboard

Imports flow downwards only (``tests/test_layering.py``).
"""

__version__ = "0.1.0"
