"""The replayed stream: news with an emerging class (``EmergingStream``, shared with the scenario
benchmark), chat alongside, the ground truth of every event and the feedback sample."""

from __future__ import annotations

import random
from collections.abc import Collection, Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from driftline.apps.demo.options import CHAT_TASK, NEWS_TASK, DemoConfig
from driftline.models.datasets import Example

PHASES = ("pre", "post", "after")  # before the shift, shifted before the decision, after it
CHANNELS = ("general", "support", "sales", "random")


@dataclass
class DemoEvent:
    """One event of the run with its truth; ``payload`` is what goes to Kafka."""

    event_id: str
    task: str
    kind: str  # news | chat
    label: str  # ground truth
    phase: str  # pre | post | after (chat follows the news phase it was sent in)
    text_id: str
    feedback: bool
    index: int = -1  # position in the task's stream, set when published
    published_ts_ms: int = 0
    feedback_ts_ms: int = 0  # when its label was sent (0: never)

    def truth_row(self) -> dict[str, Any]:
        """The event as one line of ``events.jsonl`` (the run's ground truth)."""
        return asdict(self)


class Pool:
    """Examples drawn without replacement, starting over (and counting repeats) when exhausted."""

    def __init__(self, examples: Iterable[Example], rng: random.Random) -> None:
        self.items = list(examples)
        if not self.items:
            raise ValueError("empty example pool")
        self.rng = rng
        self.rng.shuffle(self.items)
        self.position = 0
        self.repeats = 0  # times the pool started over

    def draw(self) -> Example:
        """The next example; reshuffles and starts over (counting a repeat) when the pool is used up."""
        if self.position >= len(self.items):
            self.rng.shuffle(self.items)
            self.position = 0
            self.repeats += 1
        example = self.items[self.position]
        self.position += 1
        return example


@dataclass(frozen=True)
class StreamSplits:
    """The dataset splits each side of an emerging-class stream may draw from (None: any split)."""

    old: Collection[str] | None  # texts of the classes the initial adapter knows
    new: Collection[str] | None  # texts of the emerging class

    def admits(self, example: Example, new_class: str) -> bool:
        """Whether ``example`` may be replayed on its side of the stream."""
        allowed = self.new if example.label == new_class else self.old
        return allowed is None or example.split in allowed


#: the demo: old classes never from the test split (the updater's original-class check), the new class
#: from any split
DEMO_SPLITS = StreamSplits(old=("train", "validation"), new=None)
#: the scenario benchmark: only the held-out splits, for both sides (never the train split, which feeds
#: the initial adapter and the updater's replay sample)
HELD_OUT = ("validation", "test")
HELD_OUT_SPLITS = StreamSplits(old=HELD_OUT, new=HELD_OUT)


class EmergingStream:
    """The emerging-class news stream: old classes only before the shift, then ``share`` of the new class.

    The one builder of that stream, for the demo (``StreamBuilder``, event by event: the length of the
    shifted phase is decided live) and the scenario benchmark (``take``, a whole stream at once).
    ``examples`` is the news dataset; a text is replayed when it is not in ``exclude_ids`` (what the
    initial adapter trained on) and ``splits`` admits it. Each side is a ``Pool`` (without replacement,
    reshuffled when used up); both pools shuffle with ``random.Random(seed)`` (``shuffle_rng``: a
    caller's further pools may share it) and the new-class draws use ``random.Random(seed + 1)``
    (``rng``: a caller's per-event draws, such as the demo's feedback sample, may share it), so a seed
    gives one stream.
    """

    def __init__(
        self,
        examples: Iterable[Example],
        new_class: str,
        share: float,
        seed: int,
        *,
        exclude_ids: Collection[str] = frozenset(),
        splits: StreamSplits = DEMO_SPLITS,
    ) -> None:
        self.new_class = new_class
        self.share = share
        self.shuffle_rng = random.Random(seed)
        self.rng = random.Random(seed + 1)
        usable = [e for e in examples if e.id not in exclude_ids and splits.admits(e, new_class)]
        self.old = Pool([e for e in usable if e.label != new_class], self.shuffle_rng)
        self.new = Pool([e for e in usable if e.label == new_class], self.shuffle_rng)
        self.drawn: dict[str, int] = {"old": 0, "new": 0}

    def draw(self, shifted: bool) -> Example:
        """The next text: an old class before the shift; after it, the new class with chance ``share``."""
        emerging = shifted and self.rng.random() < self.share
        pool, name = (self.new, "new") if emerging else (self.old, "old")
        self.drawn[name] += 1
        return pool.draw()

    def take(self, pre: int, post: int) -> list[Example]:
        """A whole stream: ``pre`` texts before the shift, then ``post`` after it."""
        return [self.draw(shifted=i >= pre) for i in range(pre + post)]

    @property
    def repeated_texts(self) -> int:
        """Draws beyond a pool's size (texts replayed twice)."""
        pools = (("old", self.old), ("new", self.new))
        return sum(max(0, self.drawn[name] - len(pool.items)) for name, pool in pools)


class StreamBuilder:
    """Makes the events of a run on demand (the length of the shifted phase is decided live)."""

    def __init__(self, config: DemoConfig, run_id: str, news_seen: set[str], chat_seen: set[str]) -> None:
        from driftline.models.datasets import load_dataset
        from driftline.models.tasks import get_task

        self.config = config
        self.run_id = run_id
        news = load_dataset(get_task(NEWS_TASK).dataset).examples
        chat = load_dataset(get_task(CHAT_TASK).dataset).examples
        self.news = EmergingStream(
            news, config.new_class, config.new_class_share, config.seed, exclude_ids=news_seen
        )
        self._rng = self.news.rng  # the feedback sample draws between the news stream's own draws
        self.chat = Pool(
            [e for e in chat if e.split != "test" and e.id not in chat_seen], self.news.shuffle_rng
        )
        self.chat_drawn = 0
        self.counts: dict[str, int] = {NEWS_TASK: 0, CHAT_TASK: 0}
        self._chat_credit = 0.0

    @property
    def repeated_texts(self) -> int:
        """Draws beyond a pool's size (texts sent twice in this run)."""
        return self.news.repeated_texts + max(0, self.chat_drawn - len(self.chat.items))

    def _event(self, example: Example, task: str, kind: str, phase: str) -> tuple[DemoEvent, dict[str, Any]]:
        index = self.counts[task]
        self.counts[task] += 1
        event_id = f"demo-{self.run_id}-{kind}-{index}"
        # random labelling decides here; active labelling when a worker requests the label (publisher)
        sampled = self._rng.random() < self.config.feedback_fraction
        feedback = sampled and self.config.labeler == "random"
        event = DemoEvent(event_id, task, kind, example.label, phase, example.id, feedback, index)
        now = datetime.now(UTC).isoformat()
        if kind == "news":
            title, sep, body = example.text.partition(". ")
            if not sep or not body:
                title, body = "", example.text
            payload = {"id": event_id, "timestamp": now, "source": "bbc_news_replay", "title": title,
                       "body": body, "language": "en"}  # fmt: skip
        else:
            conversation = f"demo-{self.run_id}-c{index // 5}"
            payload = {"id": event_id, "timestamp": now, "conversation_id": conversation,
                       "user": f"u{index % 50}", "channel": CHANNELS[index % len(CHANNELS)],
                       "text": example.text, "language": "zh"}  # fmt: skip
        return event, payload

    def next_news(self, phase: str) -> tuple[DemoEvent, dict[str, Any]]:
        """The next news event of ``phase``: old classes only before the shift, a mix after it."""
        if phase not in PHASES:
            raise ValueError(f"unknown phase {phase!r}")
        return self._event(self.news.draw(shifted=phase != "pre"), NEWS_TASK, "news", phase)

    def chat_due(self) -> int:
        """How many chat events to send after one news event (keeps ``chat_per_news`` on average)."""
        self._chat_credit += self.config.chat_per_news
        due = int(self._chat_credit)
        self._chat_credit -= due
        return due

    def next_chat(self, phase: str) -> tuple[DemoEvent, dict[str, Any]]:
        """The next chat event, tagged with the news ``phase`` it accompanies."""
        self.chat_drawn += 1
        return self._event(self.chat.draw(), CHAT_TASK, "chat", phase)


def feedback_payload(event: DemoEvent) -> dict[str, Any]:
    """The feedback-topic message for ``event`` (``driftline.schema.events.FeedbackEvent``)."""
    return {
        "event_id": event.event_id,
        "task": event.task,
        "label": event.label,
        "source": "demo",
        "timestamp": datetime.now(UTC).isoformat(),
    }
