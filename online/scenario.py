"""The emerging-class scenario: news_topic's first adapter never saw entertainment; then it arrives.

Library level (detectors + trainer + evaluation, the classifier in-process): the benchmark runs it
full size, tests run it small, the demo drives the same story through the full stack. The stream is
``pre_events`` stationary events without entertainment, then ``post_events`` where a share
``entertainment_share`` is entertainment; ``feedback_rate`` of events get a feedback label. After
the first drift alert and ``labels_after_drift`` further labels, the updater builds a candidate
from the serving adapter; if promoted, the stream continues on it.
"""

from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from models.datasets import Example
from online.config import UpdaterConfig, online_config
from online.drift import DriftMonitor
from online.updater import ListSource, Updater

NEW_CLASS = "entertainment"


@dataclass
class ScenarioConfig:
    pre_events: int = 1000
    post_events: int = 1500
    entertainment_share: float = 0.4
    feedback_rate: float = 0.2
    labels_after_drift: int = 80
    initial_limit: int | None = None  # per-class cap for the first adapter (None = whole train split)
    initial_max_steps: int | None = None
    update_max_steps: int | None = 150
    replay_size: int = 400
    original_eval_size: int = 300
    batch: int = 50
    seed: int = 0


@dataclass
class ScenarioResult:
    pre_accuracy: float = 0.0
    shifted_accuracy: float = 0.0  # after the shift, before any update
    updated_accuracy: float = 0.0  # after the promoted update
    new_class_accuracy_before: float = 0.0
    new_class_accuracy_after: float = 0.0
    detection_delay: int | None = None  # events after the shift until the first drift alert
    first_detector: str = ""
    alerts: list[dict[str, Any]] = field(default_factory=list)
    promoted: bool = False
    decision: str = ""
    decision_metrics: dict[str, Any] = field(default_factory=dict)
    update_at_event: int | None = None
    update_seconds: float = 0.0
    events: int = 0

    @property
    def recovery_ratio(self) -> float:
        return self.updated_accuracy / self.pre_accuracy if self.pre_accuracy else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "recovery_ratio": round(self.recovery_ratio, 4)}


def _accuracy(pairs: list[tuple[str, str]]) -> float:
    return sum(p == t for p, t in pairs) / len(pairs) if pairs else 0.0


def build_stream(cfg: ScenarioConfig, seen_ids: set[str]) -> list[Example]:
    """Pre-shift events without the new class, then a mix with ``entertainment_share`` of it.

    Texts come from outside the test split (kept for the updater's original-test evaluation) and
    outside the first adapter's training data.
    """
    from models.datasets import load_dataset
    from models.tasks import get_task

    dataset = load_dataset(get_task("news_topic").dataset)
    pool = [e for e in dataset.examples if e.split != "test" and e.id not in seen_ids]
    rng = random.Random(cfg.seed)
    old = [e for e in pool if e.label != NEW_CLASS]
    new = [e for e in pool if e.label == NEW_CLASS]
    rng.shuffle(old)
    rng.shuffle(new)

    def draw(items: list[Example], i: int) -> Example:
        return items[i % len(items)]

    stream = [draw(old, i) for i in range(cfg.pre_events)]
    n_old, n_new = cfg.pre_events, 0
    for _ in range(cfg.post_events):
        if rng.random() < cfg.entertainment_share:
            stream.append(draw(new, n_new))
            n_new += 1
        else:
            stream.append(draw(old, n_old))
            n_old += 1
    return stream


def run_emerging_class(
    cfg: ScenarioConfig | None = None, *, progress: bool = True, log=print
) -> ScenarioResult:
    from models.artifacts import read_meta
    from models.tasks import get_task
    from models.training import get_or_train, load_classifier

    cfg = cfg or ScenarioConfig()
    task = get_task("news_topic")
    initial = get_or_train(
        task, exclude=[NEW_CLASS], limit=cfg.initial_limit, max_steps=cfg.initial_max_steps, progress=progress
    )
    seen = set()
    from models.training import training_data

    train, _ = training_data(task, exclude=[NEW_CLASS], limit=cfg.initial_limit)
    seen = {e.id for e in train}
    stream = build_stream(cfg, seen)
    rng = random.Random(cfg.seed + 1)

    base = online_config("news_topic")
    updater_cfg = UpdaterConfig(
        **{**base.updater.model_dump(), "max_steps": cfg.update_max_steps, "replay_size": cfg.replay_size}
    )
    source = ListSource()
    updater = Updater(
        "news_topic",
        source=source,
        config=updater_cfg,
        progress=progress,
        seed=cfg.seed,
        original_eval_size=cfg.original_eval_size,
        log=log,
    )
    monitor = DriftMonitor("news_topic", base.drift)
    artifact, version = initial.artifact_dir, 1
    model = load_classifier(artifact)
    result = ScenarioResult(events=len(stream))
    outcomes: list[tuple[int, str, str]] = []  # (index, predicted, true)
    labels_since_drift = 0
    i = 0
    while i < len(stream):
        chunk = stream[i : i + cfg.batch]
        probs = model.predict_proba([e.text for e in chunk])
        for offset, (example, row) in enumerate(zip(chunk, probs, strict=True)):
            index = i + offset
            label = model.labels[int(row.argmax())]
            outcomes.append((index, label, example.label))
            events = monitor.update_prediction(
                {
                    "label": label,
                    "confidence": float(row.max()),
                    "model_version": str(version),
                    "adapter_hash": read_meta(artifact).adapter_hash if offset == 0 else monitor.adapter_hash,
                }
            )
            if rng.random() < cfg.feedback_rate:
                source.examples.append(example)
                events += monitor.update_feedback(label == example.label)
                if result.alerts:
                    labels_since_drift += 1
            for event in events:
                result.alerts.append(
                    {"event": index, "detector": event.detector, "statistic": event.statistic}
                )
                if result.detection_delay is None and index >= cfg.pre_events:
                    result.detection_delay = index - cfg.pre_events + 1
                    result.first_detector = event.detector
                elif index < cfg.pre_events:
                    log(f"false alarm before the shift at event {index}: {event.detector}")
        i += len(chunk)
        due = result.detection_delay is not None and result.update_at_event is None
        if due and labels_since_drift >= cfg.labels_after_drift:
            started = time.perf_counter()
            candidate = updater.build_candidate(
                artifact, source.recent_examples("news_topic", updater_cfg.max_recent_labels)
            )
            result.update_seconds = time.perf_counter() - started
            result.update_at_event = i
            result.promoted = candidate.decision.promote
            result.decision = candidate.decision.reason
            result.decision_metrics = candidate.decision.metrics
            log(f"update at event {i}: {'PROMOTED' if result.promoted else 'rejected'} - {result.decision}")
            if result.promoted:
                artifact, version = candidate.artifact, version + 1
                model = load_classifier(artifact)

    shift = cfg.pre_events
    update_at = result.update_at_event or len(stream)
    result.pre_accuracy = _accuracy([(p, t) for j, p, t in outcomes if j < shift])
    result.shifted_accuracy = _accuracy([(p, t) for j, p, t in outcomes if shift <= j < update_at])
    result.updated_accuracy = _accuracy([(p, t) for j, p, t in outcomes if j >= update_at])
    result.new_class_accuracy_before = _accuracy(
        [(p, t) for j, p, t in outcomes if shift <= j < update_at and t == NEW_CLASS]
    )
    result.new_class_accuracy_after = _accuracy(
        [(p, t) for j, p, t in outcomes if j >= update_at and t == NEW_CLASS]
    )
    return result
