"""The emerging-class scenario: news_topic's first adapter never saw entertainment; then it arrives.

A harness over the production parts (drift monitor, ``UpdateTrigger``, ``Updater`` and the
promotion policy, the classifier in-process): the benchmark runs it full size, tests run it small,
the demo drives the same story through the full stack. The stream is ``pre_events`` stationary events
without entertainment, then ``post_events`` where a share ``entertainment_share`` is entertainment;
``feedback_rate`` of events get a feedback label. Every prediction and label goes to the monitor and
the trigger exactly as the worker and the updater feed them in production; when the production
trigger says an update is due, the updater builds a candidate from the serving adapter, and if the
promotion policy accepts it the stream continues on it. Trigger settings (``labels_after_drift``,
``min_new_labels`` ...) are the task's online configuration unless the scenario overrides them.

Honesty rules: stream texts come only from the validation and test splits, which no initial adapter
trains on (the train split feeds the first adapter and the replay sample). BBC News has ~430 such
texts, so the stream repeats them; after the update a repeated text may be one the candidate trained
on (it came back as feedback), so the result reports accuracy on *unseen* texts (not in the
candidate's training data) beside the all-events figure, and the recovery ratio uses the unseen one.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from driftline.models.datasets import Example
from driftline.online.config import UpdaterConfig, online_config
from driftline.online.drift import DriftMonitor
from driftline.online.update.data import update_split
from driftline.online.update.sources import ListSource
from driftline.online.update.trigger import UpdateTrigger
from driftline.online.update.updater import Updater
from driftline.schema.timestamps import now_ms

NEW_CLASS = "entertainment"
STREAM_SPLITS = ("validation", "test")


@dataclass
class ScenarioConfig:
    """The stream's shape and the update's cost knobs (None = the task's own settings)."""

    pre_events: int = 1000
    post_events: int = 1500
    entertainment_share: float = 0.4
    feedback_rate: float = 0.2
    labels_after_drift: int | None = None  # None = the task's online configuration
    initial_limit: int | None = None  # per-class cap for the first adapter (None = whole train split)
    initial_max_steps: int | None = None
    update_max_steps: int | None = 150
    update_epochs: int = 2
    update_lr: float | None = None  # None = the task's training lr
    update_head_lr: float | None = None
    update_batch_size: int | None = None
    replay_size: int = 400
    original_eval_size: int = 300
    batch: int = 50
    seed: int = 0


@dataclass
class ScenarioResult:
    """What one scenario run measured: accuracies per phase, detection delay, the update decision."""

    pre_accuracy: float = 0.0
    shifted_accuracy: float = 0.0  # after the shift, before any update
    updated_accuracy: float = 0.0  # after the promoted update, all events
    updated_accuracy_unseen: float = 0.0  # after the update, texts the candidate did not train on
    new_class_accuracy_before: float = 0.0
    new_class_accuracy_after: float = 0.0
    new_class_accuracy_after_unseen: float = 0.0
    n_after_update: int = 0
    n_after_update_unseen: int = 0
    detection_delay: int | None = None  # events after the shift until the first drift alert
    first_detector: str = ""
    false_alarms_before_shift: int = 0
    alerts: list[dict[str, Any]] = field(default_factory=list)
    promoted: bool = False
    decision: str = ""
    decision_metrics: dict[str, Any] = field(default_factory=dict)
    update_at_event: int | None = None
    waits: int = 0  # times the gate (or the holdout size) asked for more labels first
    update_seconds: float = 0.0
    feedback_labels: int = 0
    stream_texts: int = 0
    events: int = 0

    @property
    def recovery_ratio(self) -> float:
        """Accuracy after the update on unseen texts, relative to the accuracy before the shift."""
        """Accuracy on unseen texts after the update over pre-shift accuracy (target >= 0.95)."""
        return self.updated_accuracy_unseen / self.pre_accuracy if self.pre_accuracy else 0.0

    @property
    def recovery_ratio_all(self) -> float:
        """Like ``recovery_ratio`` but over every event after the update."""
        return self.updated_accuracy / self.pre_accuracy if self.pre_accuracy else 0.0

    def to_dict(self) -> dict[str, Any]:
        """The result as JSON-ready values, recovery ratios included."""
        return {
            **asdict(self),
            "recovery_ratio": round(self.recovery_ratio, 4),
            "recovery_ratio_all": round(self.recovery_ratio_all, 4),
        }


def _accuracy(pairs: list[tuple[str, str]]) -> float:
    return sum(p == t for p, t in pairs) / len(pairs) if pairs else 0.0


def stream_pool(exclude_ids: set[str]) -> list[Example]:
    """Validation + test texts of BBC News, minus ``exclude_ids`` (defensive: the splits are disjoint)."""
    from driftline.models.datasets import load_dataset
    from driftline.models.tasks import get_task

    dataset = load_dataset(get_task("news_topic").dataset)
    return [e for e in dataset.examples if e.split in STREAM_SPLITS and e.id not in exclude_ids]


def build_stream(cfg: ScenarioConfig, pool: list[Example]) -> list[Example]:
    """Pre-shift events without the new class, then a mix with ``entertainment_share`` of it.

    Each class's texts are shuffled once and cycled, so repeats are as far apart as possible.
    """
    rng = random.Random(cfg.seed)
    old = [e for e in pool if e.label != NEW_CLASS]
    new = [e for e in pool if e.label == NEW_CLASS]
    if not old or not new:
        raise ValueError("the stream pool needs texts with and without the new class")
    rng.shuffle(old)
    rng.shuffle(new)
    stream = [old[i % len(old)] for i in range(cfg.pre_events)]
    n_old, n_new = cfg.pre_events, 0
    for _ in range(cfg.post_events):
        if rng.random() < cfg.entertainment_share:
            stream.append(new[n_new % len(new)])
            n_new += 1
        else:
            stream.append(old[n_old % len(old)])
            n_old += 1
    return stream


def run_emerging_class(
    cfg: ScenarioConfig | None = None,
    *,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> ScenarioResult:
    """Run the scenario end to end in-process (initial adapter cached) and return what it measured."""
    from driftline.models.artifacts import read_meta
    from driftline.models.cache import get_or_train, training_data
    from driftline.models.classifier import load_classifier
    from driftline.models.tasks import get_task

    cfg = cfg or ScenarioConfig()
    task = get_task("news_topic")
    initial = get_or_train(
        task, exclude=[NEW_CLASS], limit=cfg.initial_limit, max_steps=cfg.initial_max_steps, progress=progress
    )
    train, _ = training_data(task, exclude=[NEW_CLASS], limit=cfg.initial_limit)
    pool = stream_pool({e.id for e in train})
    stream = build_stream(cfg, pool)
    rng = random.Random(cfg.seed + 1)

    base = online_config("news_topic")
    updater_cfg = UpdaterConfig(
        **{
            **base.updater.model_dump(),
            "max_steps": cfg.update_max_steps,
            "epochs": cfg.update_epochs,
            "replay_size": cfg.replay_size,
            "lr": cfg.update_lr,
            "head_lr": cfg.update_head_lr,
            "batch_size": cfg.update_batch_size,
            **({"labels_after_drift": cfg.labels_after_drift} if cfg.labels_after_drift is not None else {}),
        }
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
    adapter_hash = read_meta(artifact).adapter_hash
    model = load_classifier(artifact)
    result = ScenarioResult(events=len(stream), stream_texts=len({e.id for e in stream}))
    outcomes: list[tuple[int, str, str, str]] = []  # (index, predicted, true, text id)
    trained_ids: frozenset[str] = frozenset()
    trigger = UpdateTrigger(updater_cfg)
    i = 0
    while i < len(stream):
        chunk = stream[i : i + cfg.batch]
        probs = model.predict_proba([e.text for e in chunk])
        for offset, (example, row) in enumerate(zip(chunk, probs, strict=True)):
            index = i + offset
            label = model.labels[int(row.argmax())]
            outcomes.append((index, label, example.label, example.id))
            prediction = {
                "label": label,
                "confidence": float(row.max()),
                "model_version": str(version),
                "adapter_hash": adapter_hash,
            }
            events = monitor.update_prediction(prediction)
            if rng.random() < cfg.feedback_rate:
                source.add(example, now_ms())
                result.feedback_labels += 1
                trigger.on_feedback()
                events += monitor.update_feedback(label == example.label, label=example.label)
            for event in events:
                trigger.on_drift(event)
                result.alerts.append(
                    {"event": index, "detector": event.detector, "statistic": event.statistic}
                )
                if index < cfg.pre_events:
                    result.false_alarms_before_shift += 1
                    log(f"false alarm before the shift at event {index}: {event.detector}")
                elif result.detection_delay is None:
                    result.detection_delay = index - cfg.pre_events + 1
                    result.first_detector = event.detector
                    log(f"drift detected {result.detection_delay} events after the shift ({event.detector})")
        i += len(chunk)
        reason = trigger.reason() if result.update_at_event is None else None
        if reason is not None:
            log(f"update due at event {i}: {reason}")
            drift, since = trigger.drift, trigger.since_ts_ms
            trigger.mark_updated()
            limit = updater_cfg.max_recent_labels
            recent = source.recent_examples("news_topic", limit)
            fresh = source.recent_examples("news_topic", limit, since) if since else None
            if updater.labels_short(len(update_split(recent, fresh, updater_cfg.holdout_fraction)[1])):
                result.waits += 1
                trigger.wait(drift, since, updater_cfg.wait_labels)
                continue
            started = time.perf_counter()
            candidate = updater.train_candidate(artifact, recent, fresh)
            result.update_seconds = round(time.perf_counter() - started, 1)
            log(f"update at event {i}: {candidate.decision.verdict} - {candidate.decision.reason}")
            if candidate.decision.wait:
                result.waits += 1
                trigger.wait(drift, since, updater_cfg.wait_labels)
                continue
            result.update_at_event = i
            result.promoted = candidate.decision.promote
            result.decision = candidate.decision.reason
            result.decision_metrics = candidate.decision.metrics
            if result.promoted:
                artifact, version = candidate.artifact, version + 1
                adapter_hash = candidate.meta.adapter_hash
                trained_ids = candidate.trained_ids
                model = load_classifier(artifact)

    shift = cfg.pre_events
    update_at = result.update_at_event or len(stream)
    after = [(p, t, tid) for j, p, t, tid in outcomes if j >= update_at]
    unseen = [(p, t) for p, t, tid in after if tid not in trained_ids]
    result.pre_accuracy = _accuracy([(p, t) for j, p, t, _ in outcomes if j < shift])
    result.shifted_accuracy = _accuracy([(p, t) for j, p, t, _ in outcomes if shift <= j < update_at])
    result.updated_accuracy = _accuracy([(p, t) for p, t, _ in after])
    result.updated_accuracy_unseen = _accuracy(unseen)
    result.n_after_update, result.n_after_update_unseen = len(after), len(unseen)
    result.new_class_accuracy_before = _accuracy(
        [(p, t) for j, p, t, _ in outcomes if shift <= j < update_at and t == NEW_CLASS]
    )
    result.new_class_accuracy_after = _accuracy([(p, t) for p, t, _ in after if t == NEW_CLASS])
    result.new_class_accuracy_after_unseen = _accuracy([(p, t) for p, t in unseen if t == NEW_CLASS])
    return result
