"""Which predictions are worth a person's label: a task's label-request policy.

``LabelRequester`` spends a budget (boosted during drift) on a hashed random share plus the most uncertain,
diverse events; pure logic, no I/O.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from driftline.models.explain.policy import sample_point
from driftline.online.config import LabelRequestConfig

Reason = Literal["random", "uncertain"]
_WORDS = re.compile(r"\w+", re.UNICODE)
_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
_BITS = 64


@dataclass(frozen=True)
class LabelCandidate:
    """One classified event: its id, its text and the probabilities the serving version gave."""

    event_id: str
    text: str
    probabilities: Mapping[str, float]

    @property
    def label(self) -> str:
        """The predicted label."""
        return max(self.probabilities, key=self.probabilities.__getitem__)


@dataclass(frozen=True)
class Pick:
    """A label request: which event, why, its uncertainty, and (random share) its sampling probability."""

    event_id: str
    reason: Reason
    uncertainty: float
    sampling_probability: float | None  # None: chosen for its uncertainty, not by chance


def uncertainty(probabilities: Mapping[str, float], kind: Literal["margin", "entropy"] = "margin") -> float:
    """How unsure the model is, 0 (certain) .. 1: one minus the top-two margin, or normalised entropy."""
    values = sorted(probabilities.values(), reverse=True)
    if len(values) < 2:
        return 0.0
    if kind == "margin":
        return min(1.0, max(0.0, 1.0 - (values[0] - values[1])))
    entropy = -sum(p * math.log(p) for p in values if p > 0)
    return min(1.0, max(0.0, entropy / math.log(len(values))))


def _tokens(text: str) -> list[str]:
    """Words, and character bigrams of CJK runs (Chinese has no spaces)."""
    out: list[str] = []
    for word in _WORDS.findall(text.lower()):
        if _CJK.search(word):
            out.extend(word[i : i + 2] for i in range(max(1, len(word) - 1)))
        else:
            out.append(word)
    return out


def simhash(text: str) -> int:
    """A 64-bit SimHash of the text's tokens: near-identical texts differ in few bits.

    Bit votes are counted with numpy (one row of 64 bits per token): the classify hook computes it
    for each request of a batch, and an article has hundreds of tokens.
    """
    tokens = _tokens(text)
    if not tokens:
        return 0
    digests = b"".join(hashlib.blake2b(t.encode(), digest_size=8).digest() for t in tokens)
    bits = np.unpackbits(np.frombuffer(digests, dtype=np.uint8).reshape(len(tokens), 8), axis=1)
    votes = 2 * bits.sum(axis=0, dtype=np.int64) - len(tokens)  # per bit, most significant first
    return sum(1 << (_BITS - 1 - int(i)) for i in np.flatnonzero(votes > 0))


class LabelRequester:
    """One task's policy, with the budget credit and recent requests it carries between steps."""

    #: requests' worth of unspent budget that may be saved up (a duplicate-only step saves its share)
    MAX_CREDIT = 8.0
    #: SimHashes of recent requests kept for the duplicate check
    RECENT = 512
    #: recent events' scores that set the threshold, and how many are needed before it applies
    SCORES = 1000
    MIN_SCORES = 50

    def __init__(self, task: str, config: LabelRequestConfig) -> None:
        self.task = task
        self.config = config
        self._credit = 0.0
        self._recent: deque[int] = deque(maxlen=self.RECENT)
        self._scores: deque[float] = deque(maxlen=self.SCORES)

    def budget(self, drift_active: bool) -> float:
        """The share of events to request now."""
        boost = self.config.drift_boost if drift_active else 1.0
        return min(1.0, self.config.budget_fraction * boost)

    def _duplicate(self, fingerprint: int) -> bool:
        limit = self.config.duplicate_bits
        return any((fingerprint ^ seen).bit_count() <= limit for seen in self._recent)

    def select(self, candidates: Sequence[LabelCandidate], *, drift_active: bool = False) -> list[Pick]:
        """The events of this step to ask a person about (random share first, then by uncertainty)."""
        if not self.config.enabled or not candidates:
            return []
        cfg = self.config
        budget = self.budget(drift_active)
        p_random = budget * cfg.random_share
        picks: list[Pick] = []
        rest: list[tuple[float, LabelCandidate]] = []
        for c in candidates:
            score = uncertainty(c.probabilities, cfg.uncertainty)
            if sample_point(self.task, c.event_id) < p_random:
                picks.append(Pick(c.event_id, "random", score, p_random))
                self._recent.append(simhash(c.text))
            else:
                rest.append((score, c))
        earned = (budget - p_random) * len(candidates)
        self._credit = min(self._credit + earned, self.MAX_CREDIT + earned)
        # the bar is the steady state's, boosted or not: a boost buys more of the events that stand
        # out, never less telling ones (a lower bar would spend it on what serving knows)
        threshold = self._threshold(cfg.budget_fraction * (1.0 - cfg.random_share))
        if not drift_active or len(self._scores) < self.MIN_SCORES:  # the bar: the stream before it
            self._scores.extend(score for score, _ in rest)
        picks.extend(self._by_uncertainty(rest, threshold))
        return picks

    def _threshold(self, active_share: float) -> float:
        """The score an event must reach: the recent scores' top ``active_share`` (a little wider).

        A step is one micro-batch, often a handful of events; its best event is not worth a label
        just for being the best of few. Judged against the recent stream, the picks are the events
        that stand out there, and the budget credit saves up for them. Slightly wider than the share
        itself, so the credit, not the threshold, is what limits spending.
        """
        if len(self._scores) < self.MIN_SCORES:
            return float("-inf")
        return float(np.quantile(np.fromiter(self._scores, float), max(0.0, 1.0 - 1.5 * active_share)))

    def _by_uncertainty(self, scored: Iterable[tuple[float, LabelCandidate]], threshold: float) -> list[Pick]:
        """Of the events reaching ``threshold``: the most uncertain, less ``label_spread`` per earlier
        pick of its label, first; near-duplicates of recent requests skipped."""
        pool = [item for item in scored if item[0] >= threshold]
        per_label: dict[str, int] = {}
        picks: list[Pick] = []
        while self._credit >= 1.0 and pool:
            best = max(
                range(len(pool)),
                key=lambda i: pool[i][0] - self.config.label_spread * per_label.get(pool[i][1].label, 0),
            )
            score, candidate = pool.pop(best)
            fingerprint = simhash(candidate.text)
            if self._duplicate(fingerprint):
                continue
            self._recent.append(fingerprint)
            per_label[candidate.label] = per_label.get(candidate.label, 0) + 1
            picks.append(Pick(candidate.event_id, "uncertain", score, None))
            self._credit -= 1.0
        return picks
