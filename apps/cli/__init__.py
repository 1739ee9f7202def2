"""The ``driftline`` command line: one typer app, each area's commands in their own module.

A thin layer over library code; heavy imports (torch) happen inside commands so ``--help`` stays fast.
"""

from __future__ import annotations

import typer

from driftline.apps.cli import (
    configuration,
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

for module in (stack, modelling, pipeline, explaining, learning, labelling, rescoring, demo, configuration):
    module.register(app)


def main() -> None:
    """Entry point of the ``driftline`` console script."""
    app()
