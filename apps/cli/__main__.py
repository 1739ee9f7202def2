"""``python -m driftline.apps.cli``: the ``driftline`` console script without the installed entry point."""

from driftline.apps.cli import main

main()
