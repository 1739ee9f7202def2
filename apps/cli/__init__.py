"""The ``driftline`` command line.

One typer app; each area registers its commands from its own module so the CLI stays a thin layer
over library code (heavy imports such as torch happen inside commands, keeping ``--help`` fast).
Modules, all in ``driftline.apps.cli``:

- ``stack``    : ``driftline stack up|down|status|logs``
- ``modelling``: ``driftline data describe``, ``train``, ``export``
- ``pipeline`` : ``driftline worker``, ``publish``, ``replay``, ``tail``
- ``learning`` : ``driftline updater``, ``models list|promote|rollback``
- ``labelling``: ``driftline labels list|accept`` (open taxonomy)
- ``rescoring``: ``driftline rescore`` (a past range classified again, from Kafka retention)
- ``explaining``: ``driftline explainer``, ``explain EVENT_ID``
- ``demo``     : ``driftline demo``, ``dashboard``
- ``config``   : ``driftline config show``
"""

from __future__ import annotations

import typer

from driftline.apps.cli import (
    config,
    demo,
    explaining,
    labelling,
    learning,
    modelling,
    pipeline,
    rescoring,
    stack,
)

app = typer.Typer(
    name="driftline",
    help="Streaming NLP inference that keeps learning while it runs.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # locals may hold secrets
)

for module in (stack, modelling, pipeline, explaining, learning, labelling, rescoring, demo, config):
    module.register(app)


def main() -> None:
    """Entry point of the ``driftline`` console script."""
    app()
