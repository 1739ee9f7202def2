"""The records every stage writes: one class per boundary, next to the migrations that hold them.

Each record is what its topic carries and knows its ClickHouse table (``TABLE``, ``COLUMNS``, ``to_row()``).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from driftline.schema.timestamps import now_ms, tick_ms, to_datetime

Row = tuple[Any, ...]


def insert_sql(table: str, columns: tuple[str, ...]) -> str:
    """The clickhouse-driver ``INSERT INTO <table> (<columns>) VALUES`` statement."""
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES"


class PredictionRecord(BaseModel):
    """What the predictions topic carries: one classified event with full provenance (``labels`` row)."""

    TABLE: ClassVar[str] = "labels"
    COLUMNS: ClassVar[tuple[str, ...]] = (
        "task", "event_id", "topic", "partition", "kafka_offset", "event_time", "processed_time",
        "event_ts_ms", "processed_ts_ms", "text", "source", "channel", "language", "label", "confidence",
        "label_names", "probabilities", "explanation", "model_name", "model_version", "adapter_hash",
        "truncated", "latency_ms", "engine",
    )  # fmt: skip

    model_config = ConfigDict(extra="ignore", protected_namespaces=())

    event_id: str
    task: str
    event_kind: str  # the route's schema: news | chat
    subject: str  # alert grouping key: the news label, or the chat channel
    topic: str
    partition: int
    offset: int
    event_ts_ms: int
    processed_ts_ms: int
    text: str
    source: str
    channel: str
    language: str
    label: str
    confidence: float
    label_names: list[str]
    probabilities: list[float]
    explanation: list[tuple[str, float]]
    model_name: str
    model_version: str
    adapter_hash: str
    truncated: bool
    latency_ms: float
    engine: str = ""  # the inference engine of the serving version (models/engines)

    def to_row(self) -> Row:
        """The ``labels`` row (explanation keeps the tokens, not their scores)."""
        return (
            self.task, self.event_id, self.topic, self.partition, self.offset, to_datetime(self.event_ts_ms),
            to_datetime(self.processed_ts_ms), self.event_ts_ms, self.processed_ts_ms, self.text, self.source,
            self.channel, self.language, self.label, self.confidence, self.label_names, self.probabilities,
            [token for token, _ in self.explanation], self.model_name, self.model_version, self.adapter_hash,
            int(self.truncated), self.latency_ms, self.engine,
        )  # fmt: skip


class LabelRequestRecord(BaseModel):
    """An event a worker asks a person to label (``label_requests``, 0007; topic ``label_requests``).

    Carries the event's text and the prediction (label, probabilities, the version that made it) and
    why it was chosen (``online/labels/request_policy.py``): ``random`` picks record their inclusion
    probability, ``uncertain`` ones record 0. Its explanation is in ``explanations`` under the same
    (task, event_id, model_version): the explainer service explains every requested event (the worker
    itself never runs a backward pass). ``status`` moves on in new rows
    (``driftline.streams.learning.request_status``).
    """

    TABLE: ClassVar[str] = "label_requests"
    COLUMNS: ClassVar[tuple[str, ...]] = (
        "task", "event_id", "text", "label", "confidence", "label_names", "probabilities", "model_name",
        "model_version", "adapter_hash", "reason", "uncertainty", "sampling_probability", "drift_active",
        "status", "event_time", "event_ts_ms", "requested_ts_ms", "updated_ts_ms",
    )  # fmt: skip

    model_config = ConfigDict(protected_namespaces=())

    task: str
    event_id: str
    text: str
    label: str
    confidence: float
    label_names: list[str]
    probabilities: list[float]
    model_name: str
    model_version: str
    adapter_hash: str = ""
    reason: str  # random | uncertain
    uncertainty: float
    sampling_probability: float = 0.0  # inclusion probability of a random pick; 0 for uncertain ones
    drift_active: bool = False
    status: str = "requested"  # requested | answered | expired
    event_ts_ms: int
    requested_ts_ms: int = Field(default_factory=now_ms)
    updated_ts_ms: int = Field(default_factory=now_ms)

    def to_row(self) -> Row:
        """The ``label_requests`` row."""
        return (
            self.task, self.event_id, self.text, self.label, float(self.confidence), list(self.label_names),
            [float(p) for p in self.probabilities], self.model_name, self.model_version, self.adapter_hash,
            self.reason, float(self.uncertainty), float(self.sampling_probability), int(self.drift_active),
            self.status, to_datetime(self.event_ts_ms), self.event_ts_ms, self.requested_ts_ms,
            self.updated_ts_ms,
        )  # fmt: skip


class ExplanationRecord(BaseModel):
    """The top words behind one event's label under one model version (``explanations``, 0005).

    Written by the explainer service and ``driftline explain``; ``error`` is empty on success and
    says why otherwise (then ``explanation`` is empty).
    """

    TABLE: ClassVar[str] = "explanations"
    COLUMNS: ClassVar[tuple[str, ...]] = (
        "task", "event_id", "model_version", "model_name", "adapter_hash", "label", "confidence", "tokens",
        "scores", "reason", "method", "event_time", "event_ts_ms", "computed_time", "computed_ts_ms",
        "latency_ms", "error",
    )  # fmt: skip

    model_config = ConfigDict(protected_namespaces=())

    task: str
    event_id: str
    model_version: str
    model_name: str
    adapter_hash: str = ""  # of the weights that computed it (the version folder's meta.json)
    label: str  # the label explained (the prediction's)
    confidence: float
    explanation: list[tuple[str, float]] = Field(default_factory=list)  # (word, score), best first
    reason: str  # uncertain | sample | all | on_demand | label_request (driftline.models.explain.policy)
    method: str = "grad_x_input"
    event_ts_ms: int
    computed_ts_ms: int = Field(default_factory=now_ms)
    latency_ms: float = 0.0  # compute time of the batch it was part of, per text
    error: str = ""

    def to_row(self) -> Row:
        """The ``explanations`` row: words and scores as two parallel arrays."""
        return (
            self.task, self.event_id, self.model_version, self.model_name, self.adapter_hash, self.label,
            float(self.confidence), [word for word, _ in self.explanation],
            [float(score) for _, score in self.explanation], self.reason, self.method,
            to_datetime(self.event_ts_ms), self.event_ts_ms, to_datetime(self.computed_ts_ms),
            self.computed_ts_ms, float(self.latency_ms), self.error,
        )  # fmt: skip

    @classmethod
    def from_row(cls, row: Row) -> ExplanationRecord:
        """The record of a ``SELECT <COLUMNS> FROM explanations`` row."""
        data = dict(zip(cls.COLUMNS, row, strict=True))
        for derived in ("event_time", "computed_time"):
            data.pop(derived)
        tokens, scores = data.pop("tokens"), data.pop("scores")
        data["confidence"] = round(float(data["confidence"]), 6)  # Float32 column: 7 significant digits
        data["explanation"] = [(str(t), round(float(s), 4)) for t, s in zip(tokens, scores, strict=True)]
        return cls(**data)


class AlertRecord(BaseModel):
    """What the alerts topic carries; ``evidence`` is free-form JSON (counts, baseline, samples)."""

    TABLE: ClassVar[str] = "alerts"
    COLUMNS: ClassVar[tuple[str, ...]] = (
        "alert_id", "kind", "task", "created_time", "created_ts_ms", "severity", "subject", "message",
        "evidence",
    )  # fmt: skip

    alert_id: str
    kind: str
    task: str
    created_ts_ms: int
    severity: str = "warning"
    subject: str
    message: str
    evidence: dict[str, Any] = Field(default_factory=dict)

    def to_row(self) -> Row:
        """The ``alerts`` row; evidence is stored as a JSON string."""
        return (
            self.alert_id, self.kind, self.task, to_datetime(self.created_ts_ms), self.created_ts_ms,
            self.severity, self.subject, self.message,
            json.dumps(self.evidence, ensure_ascii=False, sort_keys=True),
        )  # fmt: skip


class TaskLabelRecord(BaseModel):
    """A label of a task's open taxonomy (``task_labels``, 0008): proposed by feedback or accepted.

    ``examples`` are event ids whose feedback carried the label; a change of status is a new row with
    a later ``updated_ts_ms`` (read with ``FINAL``).
    """

    TABLE: ClassVar[str] = "task_labels"
    COLUMNS: ClassVar[tuple[str, ...]] = (
        "task", "label", "status", "source", "examples", "proposed_time", "proposed_ts_ms", "updated_ts_ms",
    )  # fmt: skip

    task: str
    label: str
    status: Literal["proposed", "accepted"]
    source: str  # feedback | cli:<user>
    examples: list[str] = Field(default_factory=list)
    proposed_ts_ms: int = Field(default_factory=now_ms)
    updated_ts_ms: int = Field(default_factory=now_ms)

    def to_row(self) -> Row:
        """The ``task_labels`` row."""
        return (
            self.task, self.label, self.status, self.source, list(self.examples),
            to_datetime(self.proposed_ts_ms), self.proposed_ts_ms, self.updated_ts_ms,
        )  # fmt: skip


class RescoredRecord(BaseModel):
    """One event of a past range classified again by a chosen version (``rescored_labels``, 0009).

    Written by ``driftline rescore`` beside the original ``labels`` row of the event, never over it;
    ``run_id`` names the run (task, version and time range).
    """

    TABLE: ClassVar[str] = "rescored_labels"
    COLUMNS: ClassVar[tuple[str, ...]] = (
        "run_id", "task", "event_id", "topic", "partition", "kafka_offset", "event_time", "event_ts_ms",
        "rescored_ts_ms", "model_name", "model_version", "adapter_hash", "engine", "label", "confidence",
        "label_names", "probabilities",
    )  # fmt: skip

    model_config = ConfigDict(frozen=True, protected_namespaces=())

    run_id: str
    task: str
    event_id: str
    topic: str
    partition: int
    offset: int
    event_ts_ms: int
    rescored_ts_ms: int = Field(default_factory=now_ms)
    model_name: str
    model_version: str
    adapter_hash: str
    engine: str = ""
    label: str
    confidence: float
    label_names: list[str]
    probabilities: list[float]

    def to_row(self) -> Row:
        """The ``rescored_labels`` row."""
        return (
            self.run_id, self.task, self.event_id, self.topic, self.partition, self.offset,
            to_datetime(self.event_ts_ms), self.event_ts_ms, self.rescored_ts_ms, self.model_name,
            self.model_version, self.adapter_hash, self.engine, self.label, self.confidence,
            list(self.label_names), list(self.probabilities),
        )  # fmt: skip


class RescoreProgressRecord(BaseModel):
    """Where a rescore run stands on one input partition (``rescore_progress``, 0009).

    ``end_offset`` is fixed when the run starts, so a resumed run covers the same range; a row is
    written only once the rows before ``next_offset`` are stored, and the newest row wins (FINAL).
    """

    TABLE: ClassVar[str] = "rescore_progress"
    COLUMNS: ClassVar[tuple[str, ...]] = (
        "run_id", "task", "model_version", "topic", "partition", "start_offset", "next_offset",
        "end_offset", "from_ts_ms", "to_ts_ms", "updated_ts_ms",
    )  # fmt: skip

    model_config = ConfigDict(frozen=True, protected_namespaces=())

    run_id: str
    task: str
    model_version: str
    topic: str
    partition: int
    start_offset: int
    next_offset: int
    end_offset: int
    from_ts_ms: int
    to_ts_ms: int
    updated_ts_ms: int = Field(default_factory=tick_ms)

    @property
    def done(self) -> bool:
        """Whether every offset of the partition's range was read."""
        return self.next_offset >= self.end_offset

    def to_row(self) -> Row:
        """The ``rescore_progress`` row."""
        return (
            self.run_id, self.task, self.model_version, self.topic, self.partition, self.start_offset,
            self.next_offset, self.end_offset, self.from_ts_ms, self.to_ts_ms, self.updated_ts_ms,
        )  # fmt: skip

    @classmethod
    def from_row(cls, row: Row) -> RescoreProgressRecord:
        """The record of a ``SELECT <COLUMNS> FROM rescore_progress`` row."""
        return cls(**dict(zip(cls.COLUMNS, row, strict=True)))


class ShadowRecord(BaseModel):
    """A live event mirrored to a shadow version: its answer beside the serving one (``shadow_predictions``).

    Never published on the predictions topic; only the promotion decision reads it (agreement).
    """

    TABLE: ClassVar[str] = "shadow_predictions"
    COLUMNS: ClassVar[tuple[str, ...]] = (
        "task", "event_id", "model_name", "event_time", "event_ts_ms", "mirrored_ts_ms", "serving_version",
        "serving_label", "serving_confidence", "shadow_version", "shadow_adapter_hash", "shadow_label",
        "shadow_confidence", "label_names", "probabilities", "latency_ms",
    )  # fmt: skip

    model_config = ConfigDict(frozen=True, protected_namespaces=())

    task: str
    event_id: str
    model_name: str  # the serving Triton model (the shadow is ``<model_name>__shadow``)
    event_ts_ms: int
    mirrored_ts_ms: int = Field(default_factory=now_ms)
    serving_version: str
    serving_label: str
    serving_confidence: float
    shadow_version: str
    shadow_adapter_hash: str
    shadow_label: str
    shadow_confidence: float
    label_names: list[str]
    probabilities: list[float]
    latency_ms: float = 0.0

    def to_row(self) -> Row:
        """The ``shadow_predictions`` row."""
        return (
            self.task, self.event_id, self.model_name, to_datetime(self.event_ts_ms), self.event_ts_ms,
            self.mirrored_ts_ms, self.serving_version, self.serving_label, self.serving_confidence,
            self.shadow_version, self.shadow_adapter_hash, self.shadow_label, self.shadow_confidence,
            list(self.label_names), list(self.probabilities), self.latency_ms,
        )  # fmt: skip


class DeadLetterRecord(BaseModel):
    """What the dead-letter topic carries: the original bytes and why they were refused."""

    TABLE: ClassVar[str] = "dead_letters"
    COLUMNS: ClassVar[tuple[str, ...]] = (
        "topic", "partition", "kafka_offset", "received_time", "reason", "error_type", "payload_b64",
        "payload_size",
    )  # fmt: skip

    topic: str
    partition: int
    offset: int
    received_ts_ms: int
    reason: str  # "<code>: <detail>"
    code: str
    error_type: str
    payload_b64: str  # the original bytes, cut to the configured limit when larger
    payload_size: int  # size of the original payload
    payload_truncated: bool = False
    payload_sha256: str = ""

    def to_row(self) -> Row:
        """The ``dead_letters`` row."""
        return (
            self.topic, self.partition, self.offset, to_datetime(self.received_ts_ms), self.reason,
            self.error_type, self.payload_b64, self.payload_size,
        )  # fmt: skip


class FeedbackRecord(BaseModel):
    """A feedback label joined to the prediction it judges (``feedback`` row, migration 0003)."""

    TABLE: ClassVar[str] = "feedback"
    COLUMNS: ClassVar[tuple[str, ...]] = (
        "task", "event_id", "label", "source", "feedback_time", "feedback_ts_ms", "joined_ts_ms",
        "predicted_label", "correct", "confidence", "model_version", "adapter_hash",
    )  # fmt: skip

    model_config = ConfigDict(frozen=True, protected_namespaces=())

    task: str
    event_id: str
    label: str  # the true label
    source: str
    feedback_ts_ms: int
    joined_ts_ms: int = Field(default_factory=now_ms)
    predicted_label: str
    correct: bool
    confidence: float = 0.0
    model_version: str = ""
    adapter_hash: str = ""

    def to_row(self) -> Row:
        """The ``feedback`` row."""
        return (
            self.task, self.event_id, self.label, self.source, to_datetime(self.feedback_ts_ms),
            self.feedback_ts_ms, self.joined_ts_ms, self.predicted_label, int(self.correct),
            float(self.confidence), self.model_version, self.adapter_hash,
        )  # fmt: skip


@dataclass(slots=True)
class DriftEvent:
    """One drift detection: what fired, on which task and model, and the evidence behind it.

    Goes to the alerts topic (``to_alert``, an ``AlertRecord`` whose evidence is this event) and to
    ClickHouse ``drift_events`` (``to_row``); the updater reads it back from the alerts topic
    (``from_alert``) to decide on a retrain.
    """

    TABLE: ClassVar[str] = "drift_events"
    COLUMNS: ClassVar[tuple[str, ...]] = (
        "drift_id", "task", "detector", "signal", "detected_time", "detected_ts_ms", "statistic",
        "window_size", "event_count", "model_version", "adapter_hash", "severity", "details",
    )  # fmt: skip

    detector: str
    task: str
    statistic: float
    window: int
    model_version: str
    adapter_hash: str
    event_count: int  # observations this detector has seen since the monitor started
    signal: str = ""  # error_rate | confidence | label_mix | unlearned_class
    severity: str = "warning"
    details: dict[str, Any] = field(default_factory=dict)
    detected_ts_ms: int = field(default_factory=now_ms)
    drift_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    @property
    def message(self) -> str:
        """One line for people: detector, task, model and the statistic that fired."""
        return (
            f"{self.detector} detected drift on {self.task} (model {self.model_version or '?'}): "
            f"{self.signal or 'statistic'}={self.statistic:.4f} over {self.window} observations"
        )

    def to_alert(self) -> dict[str, Any]:
        """The alerts-topic payload: an ``AlertRecord`` (kind ``drift``) as a JSON-ready dict."""
        return AlertRecord(
            alert_id=self.drift_id,
            kind="drift",
            task=self.task,
            created_ts_ms=self.detected_ts_ms,
            severity=self.severity,
            subject=self.detector,
            message=self.message,
            evidence=asdict(self),
        ).model_dump(mode="json")

    def to_row(self) -> Row:
        """The ``drift_events`` row; details are stored as a JSON string."""
        return (
            self.drift_id, self.task, self.detector, self.signal, to_datetime(self.detected_ts_ms),
            self.detected_ts_ms, float(self.statistic), int(self.window), int(self.event_count),
            self.model_version, self.adapter_hash, self.severity, json.dumps(self.details, sort_keys=True),
        )  # fmt: skip

    @classmethod
    def from_alert(cls, alert: dict[str, Any]) -> DriftEvent:
        """Rebuild the event from an alerts-topic record; raises ValueError for non-drift alerts."""
        if alert.get("kind") != "drift":
            raise ValueError(f"not a drift alert: kind={alert.get('kind')!r}")
        evidence = alert.get("evidence")
        data = json.loads(evidence) if isinstance(evidence, str) else dict(evidence or {})
        known = {name for name in cls.__dataclass_fields__}
        return cls(**{key: value for key, value in data.items() if key in known})


class ModelStatus(StrEnum):
    """Where a model version stands in the registry."""

    CANDIDATE = "candidate"  # trained, being evaluated
    SHADOW = "shadow"  # passed the offline gate; mirrors live traffic before it may serve
    PROMOTED = "promoted"  # passed evaluation, being swapped in
    SERVING = "serving"
    RETIRED = "retired"  # replaced by a newer serving version
    REJECTED = "rejected"  # failed evaluation or the swap failed
    ROLLED_BACK = "rolled_back"  # was serving, an operator rolled it back


class ModelRecord(BaseModel):
    """One registry entry: a candidate adapter and its Triton version (``model_versions`` row)."""

    TABLE: ClassVar[str] = "model_versions"
    COLUMNS: ClassVar[tuple[str, ...]] = (
        "task", "version", "adapter_hash", "parent_hash", "status", "metrics", "reason", "artifact_path",
        "created_time", "created_ts_ms", "updated_ts_ms", "engine",
    )  # fmt: skip

    task: str
    version: int = 0  # Triton version number; 0 = never exported
    adapter_hash: str
    parent_hash: str = ""
    status: ModelStatus
    metrics: dict[str, Any] = Field(default_factory=dict)
    reason: str = ""
    artifact_path: str = ""
    created_ts_ms: int = Field(default_factory=now_ms)
    updated_ts_ms: int = 0
    engine: str = ""  # the inference engine export chose for the version ('' = not exported yet)

    def to_row(self) -> Row:
        """The ``model_versions`` row; version is text ('' = never exported), metrics a JSON string."""
        return (
            self.task, str(self.version) if self.version else "", self.adapter_hash, self.parent_hash,
            self.status.value, json.dumps(self.metrics, sort_keys=True, default=str), self.reason,
            self.artifact_path, to_datetime(self.created_ts_ms), self.created_ts_ms, self.updated_ts_ms,
            self.engine,
        )  # fmt: skip

    @classmethod
    def from_row(cls, row: Row) -> ModelRecord:
        """The record of a ``SELECT <COLUMNS> FROM model_versions`` row."""
        data = dict(zip(cls.COLUMNS, row, strict=True))
        data.pop("created_time")
        data["version"] = int(data["version"] or 0)
        data["metrics"] = json.loads(data["metrics"] or "{}")
        return cls(**data)

    def to_alert(self, severity: str = "info") -> dict[str, Any]:
        """The decision as an alerts-topic payload: an ``AlertRecord`` (kind ``model``) as a dict."""
        return AlertRecord(
            alert_id=uuid.uuid4().hex,
            kind="model",
            task=self.task,
            created_ts_ms=tick_ms(),
            severity=severity,
            subject=f"{self.task} v{self.version or '-'} {self.status.value}",
            message=self.reason or self.status.value,
            evidence=self.model_dump(mode="json"),
        ).model_dump(mode="json")
