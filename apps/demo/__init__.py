"""``driftline demo``: the whole learning loop on the local stack, live, ending in a report.

Modules, in the order a run uses them:

- ``config``    : run sizes (default and ``--quick``) and the demo's online-learning overrides;
- ``events``    : the replayed stream (English news with an emerging class after the shift -
  ``--new-class``, entertainment by default - Chinese chat) with ground truth, written to the run
  folder;
- ``models``    : get-or-train the initial adapters, export them, make them Triton's serving versions;
- ``processes`` : worker / updater / explainer / dashboard subprocesses with their logs in the run folder;
- ``publisher`` : paced Kafka producer for events and (delayed) feedback: answers to the workers'
  label requests (``--labeler active``) or a random sample (``random``);
- ``live``      : counters read from ClickHouse, rendered with rich while the run goes on;
- ``report``    : everything measured back out of ClickHouse: headline numbers, PNG plots, report.md;
- ``runner``    : the orchestration that ties these together (``run_demo``).
"""

from driftline.apps.demo.config import DemoConfig

__all__ = ["DemoConfig"]
