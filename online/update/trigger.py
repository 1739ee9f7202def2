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

    When the promotion gate answers "wait" (too little evidence), ``wait`` keeps the drift and asks
    for ``more`` labels before the next try; no cooldown applies to that retry. Labels counted here
    reach the updater's store a little later (the worker joins and writes them in batches), so
    labels counted before a try that the try did not see yet count toward its ``more``: while labels
    come fast, the retry does not overshoot by the store's lag.
    """

    def __init__(self, config: UpdaterConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self._clock = clock
        self.new_labels = 0
        self.drift: DriftEvent | None = None
        self._drift_since_ms: int | None = None
        self._labels_at_drift = 0
        self._last_update = float("-inf")
        self._waiting_for: int | None = None  # new_labels needed before a retry the gate asked for
        self._since_drift = 0  # labels counted since the current drift's first detection
        self._tried_with = 0  # ... when the last try began

    @property
    def since_ts_ms(self) -> int | None:
        """When the change began: the first detection of the current drift (epoch ms), or None."""
        return self._drift_since_ms

    def on_feedback(self, n: int = 1) -> None:
        """Count ``n`` new feedback labels."""
        self.new_labels += n
        self._since_drift += n

    def on_drift(self, event: DriftEvent) -> None:
        """Remember a drift (ignored during the cooldown); its label count starts at the first one."""
        if self._clock() - self._last_update < self.config.cooldown_s:
            return
        if self.drift is None:  # the first detection of a change starts its label count
            self._labels_at_drift = self.new_labels
            self._since_drift = 0
            self._drift_since_ms = event.detected_ts_ms
        self.drift = event

    def reason(self) -> str | None:
        """Why an update is due now, or None."""
        if self._waiting_for is not None:
            if self.new_labels < self._waiting_for:
                return None
            return f"more evidence ({self.new_labels} labels since the gate asked to wait)"
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
        self._tried_with = self._since_drift
        self.new_labels = 0
        self.drift = None
        self._drift_since_ms = None
        self._labels_at_drift = 0
        self._waiting_for = None
        self._last_update = self._clock()

    def wait(
        self, drift: DriftEvent | None, since_ts_ms: int | None, more: int, seen: int | None = None
    ) -> None:
        """The gate needs more evidence: keep the drift (and its start) and retry after ``more`` labels.

        ``seen``: the labels from after the drift that the try read. Those counted here before it
        began but not yet stored, and those that arrived while it ran, are already on their way.
        """
        self.drift = drift
        self._drift_since_ms = since_ts_ms
        unseen = max(0, self._tried_with - seen) if seen is not None else 0
        self._waiting_for = max(1, more - unseen) if seen is not None else self.new_labels + max(1, more)
