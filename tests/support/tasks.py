"""Task settings for tests: a real task with its taxonomy options changed."""

from __future__ import annotations

from driftline.models.tasks import get_task


def news_task(new_labels: str, min_examples: int = 3):
    """``news_topic`` with ``new_labels`` (reject, propose or accept) and ``new_label_min_examples``."""
    return get_task("news_topic").model_copy(
        update={"new_labels": new_labels, "new_label_min_examples": min_examples}
    )
