"""Which classified events get an explanation, and why: the selection rule of a task's explain policy.

Policies ``all``, ``uncertain`` (default), ``sample`` and ``none``; label requests are always explained.
The sample is a hash of (task, event_id), so replays and parallel explainers pick the same events.
"""

from __future__ import annotations

import hashlib
from enum import StrEnum

from driftline.models.tasks import ExplainPolicy, ExplainSettings

_SCALE = float(1 << 64)


class ExplainReason(StrEnum):
    """Why an explanation was computed (the ``reason`` column of ``explanations``)."""

    UNCERTAIN = "uncertain"
    SAMPLE = "sample"
    ALL = "all"
    ON_DEMAND = "on_demand"
    LABEL_REQUEST = "label_request"  # a person is asked to label it (streams.explainer)


def sample_point(task: str, event_id: str) -> float:
    """A number in [0, 1) fixed by (task, event_id): the first 8 bytes of their BLAKE2b digest."""
    digest = hashlib.blake2b(f"{task}\x00{event_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / _SCALE


def sampled(task: str, event_id: str, rate: float) -> bool:
    """Whether the event is in the task's deterministic sample of ``rate`` (0..1) of all events."""
    return sample_point(task, event_id) < rate


def explain_reason(
    settings: ExplainSettings, task: str, event_id: str, confidence: float
) -> ExplainReason | None:
    """The reason to explain this event under ``settings``, or None when the policy skips it."""
    policy = settings.policy
    if policy is ExplainPolicy.ALL:
        return ExplainReason.ALL
    if policy is ExplainPolicy.UNCERTAIN and confidence < settings.confidence_below:
        return ExplainReason.UNCERTAIN
    if policy in (ExplainPolicy.UNCERTAIN, ExplainPolicy.SAMPLE) and sampled(
        task, event_id, settings.sample_rate
    ):
        return ExplainReason.SAMPLE
    return None
