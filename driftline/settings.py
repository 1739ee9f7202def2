"""Every knob of driftline, in one pydantic-settings object read once from the environment.

Names are ``DRIFTLINE_`` + the field path joined by ``__`` (e.g. ``DRIFTLINE_KAFKA__BOOTSTRAP``); an unknown
``DRIFTLINE_*`` variable is an error. Ground floor: imports no other project package.
"""

from __future__ import annotations

import difflib
import importlib.util
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent
ENV_PREFIX = "DRIFTLINE_"
NESTED_DELIMITER = "__"

#: ``DRIFTLINE_*`` variables read by other tools, not by these settings.
ALLOWED_ENV = {
    "DRIFTLINE_VENV": "the virtual environment of the Makefile and compose/setup.sh",
    "DRIFTLINE_RELIABILITY_FAULTS": "which faults tests/stack/reliability/test_faults.py injects",
    "DRIFTLINE_RELIABILITY_RUNS": "where bench/reliability_bench.py keeps its runs",
}


def _comma_list(value: Any) -> Any:
    """``"a,b"`` -> ``["a", "b"]`` (environment values); lists pass through."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


CommaList = Annotated[list[str], NoDecode, BeforeValidator(_comma_list)]
IntCommaList = Annotated[list[int], NoDecode, BeforeValidator(_comma_list)]


def _package_file(package: str, name: str) -> Path:
    """A data file shipped in ``package``, found without importing that package."""
    spec = importlib.util.find_spec(package)
    assert spec is not None and spec.submodule_search_locations, package
    return Path(next(iter(spec.submodule_search_locations))) / name


class Topics(BaseModel):
    """Kafka topic names. One place, shared by the stack (creation), workers and compose."""

    news: str = "driftline.news.events"
    chat: str = "driftline.chat.events"
    feedback: str = "driftline.feedback"
    predictions: str = "driftline.predictions"
    alerts: str = "driftline.alerts"
    deadletter: str = "driftline.deadletter"
    label_requests: str = "driftline.label-requests"

    def all(self) -> list[str]:
        """Every topic name, in field order."""
        return [getattr(self, name) for name in type(self).model_fields]


class KafkaSettings(BaseModel):
    """Where the Kafka cluster is, how to authenticate to it, and how driftline's topics are created."""

    host: str = "127.0.0.1"
    port: int = 9092
    controller_port: int = 9093
    bootstrap: str = ""  # empty: host:port (and the other local nodes' ports)
    partitions: int = 4
    # topics driftline creates (``stack init``, workers, Faust internal topics and changelogs)
    replication_factor: int = Field(1, ge=1)
    min_insync_replicas: int = Field(1, ge=1)  # acks=all writes need this many in-sync replicas
    # topic max.message.bytes: above the broker's 1 MB default, so an oversized event reaches a worker
    # and is dead-lettered with a reason instead of being refused by the broker with no trace
    max_message_bytes: int = Field(32 << 20, ge=1)
    nodes: int = Field(1, ge=1)  # brokers the local stack runs (3: `stack up --cluster`)
    security_protocol: str = "PLAINTEXT"  # PLAINTEXT | SASL_PLAINTEXT | SASL_SSL | SSL
    sasl_mechanism: str = "SCRAM-SHA-256"
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None  # CA bundle that signed the brokers' certificates (unset: system CAs)
    ssl_certfile: Path | None = None  # client certificate (PEM) for brokers that require one
    ssl_keyfile: Path | None = None  # its private key (PEM); unset: the key is in ssl_certfile
    ssl_check_hostname: bool = True  # the broker certificate must name the host connected to
    topics: Topics = Field(default_factory=Topics)

    @model_validator(mode="after")
    def _derive_bootstrap(self) -> KafkaSettings:
        if not self.bootstrap:  # every node of the local stack (node i listens on port + 2i)
            self.bootstrap = ",".join(f"{self.host}:{self.port + 2 * i}" for i in range(self.nodes))
        return self

    @model_validator(mode="after")
    def _insync_fits_replicas(self) -> KafkaSettings:
        if self.min_insync_replicas > self.replication_factor:
            raise ValueError(
                f"kafka.min_insync_replicas ({self.min_insync_replicas}) exceeds kafka.replication_factor "
                f"({self.replication_factor}): no acks=all write could ever succeed"
            )
        return self


class ClickHouseSettings(BaseModel):
    """ClickHouse endpoints, database and credentials."""

    host: str = "127.0.0.1"
    port: int = 9000
    http_port: int = 8123
    database: str = "driftline"
    user: str = "default"
    password: SecretStr = SecretStr("")


#: Serving engines of a classifier version (driftline.models.engines): ``<library>-<graph>``; "auto" lets
#: ``prepare_engines`` choose the fastest one that keeps torch's accuracy, by measurement.
EngineSetting = Literal[
    "auto",
    "torch-fp32",
    "ort-fp32",
    "ort-int8",
    "ort-fused-fp32",
    "ort-fused-int8",
    "openvino-fp32",
    "openvino-int8",
]


class TritonSettings(BaseModel):
    """Triton endpoints, model repository, and the serving options ``export`` writes."""

    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    repository: Path = REPO_ROOT / "triton_repo"
    exit_timeout_s: int = 15
    max_queue_delay_us: int = 2000  # dynamic batching delay written by `export`
    preferred_batch: IntCommaList = Field(default_factory=lambda: [8, 16, 32, 64])
    instances: int = 1  # model instances per exported model
    torch_threads: int = 0  # engine threads per model instance; 0 = the engine's own choice (all cores)
    token_budget: int = Field(4096, ge=1)  # tokens (rows x padded length) per call a client sends
    client_timeout_s: float = Field(30.0, gt=0)  # deadline of one gRPC request of TritonClient
    client_retries: int = Field(3, ge=0)  # extra attempts of a busy/unavailable request before backing off
    engine: EngineSetting = "auto"  # what runs a served version: measured ("auto") or forced by name
    engine_selection_texts: int = Field(256, ge=1)  # held-out texts the engine selection measures on
    engine_candidates: CommaList = Field(default_factory=list)  # engines measured at export; empty: all

    @property
    def grpc_url(self) -> str:
        """``host:grpc_port``."""
        return f"{self.host}:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        """``host:http_port``."""
        return f"{self.host}:{self.http_port}"


class SurgeSettings(BaseModel):
    """Surge detection: a subject's share and count in a window against an EWMA baseline of earlier ones."""

    window_s: float = 60.0  # tumbling window length (event time)
    baseline_windows: int = 6  # how many previous windows feed the baseline (empty ones are skipped)
    ewma_alpha: float = 0.5  # weight of the most recent previous window in the baseline
    min_count: int = 20  # never alert below this many events of the subject in the window
    ratio: float = 3.0  # alert when the share's odds >= ratio * the baseline share's odds
    max_p_value: float = 0.001  # ... and the share's rise is this significant (two-proportion z-test)
    samples: int = 5  # event ids kept as evidence
    negative_labels: CommaList = Field(default_factory=lambda: ["negative"])


class PipelineConfig(BaseModel):
    """The streaming service's own knobs (batching, limits, backoff, alert windows)."""

    app_id: str = "driftline-pipeline"
    max_batch: int = 64  # stream.take() size bound: what one Triton call classifies
    batch_within_s: float = 0.2  # stream.take() time bound
    classify_concurrency: int = 1  # agent instances per input topic (overlap Kafka I/O with inference)
    sink_max_rows: int = 2000  # ClickHouse insert size bound
    sink_max_age_s: float = 1.0  # ClickHouse insert time bound
    sink_backoff_s: float = 0.5  # first retry delay of a failed insert (doubles, capped)
    sink_backoff_max_s: float = 10.0
    inference_backoff_s: float = 0.5
    inference_backoff_max_s: float = 10.0
    # a failure of one event on a ready server is retried this often before it is dead-lettered as
    # inference_rejected; overload (deadline exceeded, unavailable ...) never counts as an attempt
    inference_event_attempts: int = Field(3, ge=1)
    # messages Faust buffers per agent stream (~4 batches of max_batch); when the classify agent backs
    # off, its buffer fills and Faust stops fetching the partition, so a pause holds little memory
    stream_buffer_maxsize: int = Field(256, ge=1)
    max_event_bytes: int = 1 << 20  # raw message size limit; bigger ones are dead-lettered unread
    max_text_chars: int = 100_000  # text field limit
    deadletter_payload_bytes: int = 256 << 10  # original bytes kept per dead letter (rest summarised)
    session_timeout_s: float = 30.0  # how long a dead worker holds its partitions before a rebalance
    # how long the next offset to commit may stay a hole (skipped/abandoned, later ones read) before
    # the worker seeks its partition back to it (streams.checkpoint)
    redeliver_after_s: float = Field(30.0, gt=0)
    # share of events also sent to a model's shadow version while one is loaded (streams.shadow);
    # chosen by event id, so every worker mirrors the same events
    shadow_share: float = Field(0.1, ge=0, le=1)
    shadow_check_s: float = Field(10.0, gt=0)  # how often a worker looks for a model's shadow
    surge: SurgeSettings = Field(default_factory=SurgeSettings)


class LearningConfig(BaseModel):
    """The worker's learning loop: how long feedback waits for its prediction, what it remembers.

    Streaming decisions around the detectors (whose statistics live in ``driftline.online.config``), so
    tests and the demo can shorten the waits without touching detector thresholds.
    """

    # Feedback can overtake the label insert it refers to (the demo sends it ~1-2 s after the
    # event; a backlogged worker labels later still), so an unmatched id is retried this long
    # before it is dead-lettered as ``unknown_event_id``.
    grace_s: float = Field(60.0, ge=0)
    retry_s: float = Field(1.0, gt=0)  # how often unmatched feedback is looked up again
    max_pending: int = Field(10_000, ge=1)  # feedback waiting for its prediction; above, the agent waits
    joiner_ttl_s: float = Field(3600.0, gt=0)  # predictions remembered in memory (ClickHouse beyond)
    joiner_max: int = Field(100_000, ge=1)
    lookup_chunk: int = Field(1000, ge=1)  # event ids per ClickHouse lookup (query size limit)
    observe_max: int = Field(500, ge=1)  # observation batches per drift-watch step
    observe_within_s: float = Field(0.5, gt=0)
    request_status_s: float = Field(10.0, gt=0)  # how often label requests are marked answered/expired


class ExplainerSettings(BaseModel):
    """The explainer service (``driftline explainer``): word attributions off the serving path.

    It reads the predictions topic in its own consumer group and explains the events each task's
    explain policy selects (``models/tasks.yaml``) with the weights of the version that labelled them.
    """

    group_id: str = "driftline-explainer"  # its consumer group (one group per deployment)
    max_batch: int = Field(64, ge=1)  # predictions read (and explained, when selected) per step
    poll_s: float = Field(1.0, gt=0)  # longest wait for a batch
    # where a group without committed offsets starts: "latest" (new predictions only) or "earliest"
    # (everything the predictions topic still retains)
    auto_offset_reset: Literal["latest", "earliest"] = "latest"
    cached_versions: int = Field(3, ge=1)  # model versions kept loaded (LRU)
    device: str = "cpu"  # torch device of the explainer
    torch_threads: int = 0  # torch intra-op threads; 0 = torch's own choice (all cores)


class RouteSettings(BaseModel):
    """Task fed by each input topic: ``<task>``, ``<task>@<triton model>``, or ``-`` (no route)."""

    news: str = "news_topic"
    chat: str = "chat_sentiment"


class Settings(BaseSettings):
    """Everything driftline needs: services, folders, tuning, and where its YAML files are."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=NESTED_DELIMITER,
        env_ignore_empty=True,
        populate_by_name=True,
        extra="forbid",
    )

    run_dir: Path = REPO_ROOT / ".run"
    cache_dir: Path = Field(Path.home() / ".cache" / "driftline", validation_alias="DRIFTLINE_CACHE")
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    clickhouse: ClickHouseSettings = Field(default_factory=ClickHouseSettings)
    triton: TritonSettings = Field(default_factory=TritonSettings)
    web_host: str = "127.0.0.1"
    web_port: int = 6066
    dashboard_port: int = 8088
    # annotator id -> token, as JSON ({"ann-1": "..."}): who may answer label requests on the
    # dashboard's annotator page; empty = the page is read-only (there is no open write endpoint)
    annotator_tokens: dict[str, SecretStr] = Field(default_factory=dict)
    pipeline: PipelineConfig = Field(default_factory=PipelineConfig)
    learning: LearningConfig = Field(default_factory=LearningConfig)
    explainer: ExplainerSettings = Field(default_factory=ExplainerSettings)
    # CPU niceness the background services (explainer, updater) give themselves at start, so that on
    # a host they share with Triton and the workers, inference gets the cores first; 0 = equal
    background_nice: int = Field(10, ge=0, le=19)
    tasks_file: Path = Field(default_factory=lambda: _package_file("driftline.models", "tasks.yaml"))
    online_file: Path = Field(default_factory=lambda: _package_file("driftline.online", "online.yaml"))
    routes_file: Path | None = None  # a YAML routing table replacing `routes`
    routes: RouteSettings = Field(default_factory=RouteSettings)

    def __init__(self, **values: Any) -> None:
        check_environment(os.environ)
        super().__init__(**values)

    @field_validator("run_dir", "cache_dir")
    @classmethod
    def _expand_home(cls, path: Path) -> Path:
        return path.expanduser()


@dataclass(frozen=True)
class SettingField:
    """One leaf setting: its attribute path, environment variable and default."""

    path: tuple[str, ...]
    env: str
    default: Any

    @property
    def dotted(self) -> str:
        """``kafka.topics.news``."""
        return ".".join(self.path)


def _env_name(path: tuple[str, ...], alias: str | None) -> str:
    return alias if alias else ENV_PREFIX + NESTED_DELIMITER.join(path).upper()


def _walk(model: type[BaseModel], path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], str, Any]]:
    """(path, env name, field info) of every field, nested models included, depth first."""
    for name, info in model.model_fields.items():
        here = (*path, name)
        alias = info.validation_alias if isinstance(info.validation_alias, str) else None
        yield here, _env_name(here, alias), info
        sub = info.annotation
        if isinstance(sub, type) and issubclass(sub, BaseModel):
            yield from _walk(sub, here)


def setting_fields() -> list[SettingField]:
    """Every leaf setting with its environment variable and default (docs/configuration.md, config show)."""
    return [
        SettingField(path, env, info.get_default(call_default_factory=True))
        for path, env, info in _walk(Settings)
        if not (isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel))
    ]


def _known_env() -> set[str]:
    return {env for _, env, _ in _walk(Settings)} | set(ALLOWED_ENV)


def check_environment(environ: Mapping[str, str]) -> None:
    """Raise ``ValueError`` naming every ``DRIFTLINE_*`` variable that maps to no setting."""
    known = _known_env()
    unknown = sorted(k for k in environ if k.upper().startswith(ENV_PREFIX) and k.upper() not in known)
    if not unknown:
        return
    squashed = {k.replace("_", ""): k for k in known}
    lines = []
    for name in unknown:
        guess = squashed.get(name.upper().replace("_", "")) or next(
            iter(difflib.get_close_matches(name.upper(), known, n=1, cutoff=0.6)), None
        )
        lines.append(f"{name}" + (f" (did you mean {guess}?)" if guess else ""))
    raise ValueError(
        "unknown driftline environment variable(s): "
        + "; ".join(lines)
        + " - settings are DRIFTLINE_<FIELD>[__<FIELD>...] (docs/configuration.md)"
    )


def env_source(field: SettingField, environ: Mapping[str, str]) -> str:
    """``environment`` when the field (or a model above it, as JSON) is set there, else ``default``."""
    names = {k.upper() for k, v in environ.items() if v != ""}
    prefixes = [_env_name(field.path[:i], None) for i in range(1, len(field.path))]
    return "environment" if field.env in names or any(p in names for p in prefixes) else "default"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Process-wide settings; tests that change the environment call ``get_settings.cache_clear()``."""
    return Settings()
