"""driftline: streaming NLP inference that keeps learning while it runs.

One import namespace; ``pyproject.toml`` maps the top-level folders under it (compose, models, online,
streams, apps). Imports flow downwards only; layers: docs/design.md.
"""

__version__ = "0.1.0"
