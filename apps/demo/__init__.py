"""``driftline demo``: the whole learning loop on the local stack, live, ending in a report.

``runner.run_demo`` ties together ``config``, ``events``, ``models``, ``processes``, ``publisher``,
``live`` and ``report``.
"""

from driftline.apps.demo.options import DemoConfig

__all__ = ["DemoConfig"]
