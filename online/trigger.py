"""When the updater trains: the one update rule, used by the updater loop and the scenario benchmark."""

from __future__ import annotations

import time
from collections.abc import Callable

from driftline.online.config import UpdaterConfig
from driftline.schema.records import DriftEvent


class UpdateTrigger:
    """When to train: drift seen and enough new labels, or many new labels anyway; never in cooldown.

    After a drift, the update also waits for ``labels_after_drift`` labels that arrived *after* it:
    labels from before the change teach the candidate nothing about it, and a candidate trained on a
    handful of examples of the new distribution is rejected or barely helps.
    """

    def __init__(self, config: UpdaterConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self._clock = clock
        self.new_labels = 0
        self.drift: DriftEvent | None = None
        self._labels_at_drift = 0
        self._last_update = float("-inf")

    def on_feedback(self, n: int = 1) -> None:
        """Count ``n`` new feedback labels."""
        self.new_labels += n

    def on_drift(self, event: DriftEvent) -> None:
        """Remember a drift (ignored during the cooldown); its label count starts at the first one."""
        if self._clock() - self._last_update < self.config.cooldown_s:
            return
        if self.drift is None:  # the first detection of a change starts its label count
            self._labels_at_drift = self.new_labels
        self.drift = event

    def reason(self) -> str | None:
        """Why an update is due now, or None."""
        if self._clock() - self._last_update < self.config.cooldown_s:
            return None
        if (
            self.drift is not None
            and self.new_labels >= self.config.min_new_labels
            and self.new_labels - self._labels_at_drift >= self.config.labels_after_drift
        ):
            return f"drift ({self.drift.detector}, {self.drift.signal}={self.drift.statistic:.3f})"
        if self.new_labels >= self.config.retrain_every_labels:
            return f"{self.new_labels} new feedback labels"
        return None

    def mark_updated(self) -> None:
        """An update ran: start counting afresh and begin the cooldown."""
        self.new_labels = 0
        self.drift = None
        self._labels_at_drift = 0
        self._last_update = self._clock()
