"""Where every service lives, read once from the environment.

All of driftline (stack scripts, workers, updater, dashboard, tests) asks this module for addresses,
ports, folders and credentials, so pointing driftline at your own Kafka, ClickHouse or Triton is a
matter of environment variables (see README, "Configuration"). Defaults describe the local stack on
127.0.0.1. Secrets (``DRIFTLINE_CLICKHOUSE_PASSWORD``, ``DRIFTLINE_KAFKA_SASL_PASSWORD``) come from
the environment only and are held as ``SecretStr`` so they never reach a log or a repr.

Layering: ``compose`` is the bottom of the import graph (compose <- models <- online <- streams);
nothing here imports the other project packages.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel, Field, SecretStr

REPO_ROOT = Path(__file__).resolve().parent.parent


def _env(name: str, default: str) -> str:
    value = os.environ.get(name)
    return default if value is None or value == "" else value


def _env_int(name: str, default: int) -> int:
    return int(_env(name, str(default)))


class Topics(BaseModel):
    """Kafka topic names. One place, shared by the stack (creation), workers and compose."""

    news: str = "driftline.news.events"
    chat: str = "driftline.chat.events"
    feedback: str = "driftline.feedback"
    predictions: str = "driftline.predictions"
    alerts: str = "driftline.alerts"
    deadletter: str = "driftline.deadletter"

    def all(self) -> list[str]:
        return [self.news, self.chat, self.feedback, self.predictions, self.alerts, self.deadletter]


class KafkaSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = 9092
    controller_port: int = 9093
    bootstrap: str = "127.0.0.1:9092"
    partitions: int = 4
    security_protocol: str = "PLAINTEXT"  # PLAINTEXT | SASL_PLAINTEXT | SASL_SSL | SSL
    sasl_mechanism: str = "SCRAM-SHA-256"
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    topics: Topics = Field(default_factory=Topics)


class ClickHouseSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = 9000
    http_port: int = 8123
    database: str = "driftline"
    user: str = "default"
    password: SecretStr = SecretStr("")


class TritonSettings(BaseModel):
    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    repository: Path = REPO_ROOT / "triton_repo"
    exit_timeout_s: int = 15

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"{self.host}:{self.http_port}"


class Settings(BaseModel):
    """Everything driftline needs to find its services and folders."""

    run_dir: Path
    cache_dir: Path
    kafka: KafkaSettings
    clickhouse: ClickHouseSettings
    triton: TritonSettings
    web_host: str = "127.0.0.1"
    web_port: int = 6066
    dashboard_port: int = 8088

    @classmethod
    def from_env(cls) -> Settings:
        kafka_host = _env("DRIFTLINE_KAFKA_HOST", "127.0.0.1")
        kafka_port = _env_int("DRIFTLINE_KAFKA_PORT", 9092)
        sasl_password = os.environ.get("DRIFTLINE_KAFKA_SASL_PASSWORD")
        return cls(
            run_dir=Path(_env("DRIFTLINE_RUN_DIR", str(REPO_ROOT / ".run"))).expanduser(),
            cache_dir=Path(_env("DRIFTLINE_CACHE", str(Path.home() / ".cache" / "driftline"))).expanduser(),
            kafka=KafkaSettings(
                host=kafka_host,
                port=kafka_port,
                controller_port=_env_int("DRIFTLINE_KAFKA_CONTROLLER_PORT", 9093),
                bootstrap=_env("DRIFTLINE_KAFKA_BOOTSTRAP", f"{kafka_host}:{kafka_port}"),
                partitions=_env_int("DRIFTLINE_TOPIC_PARTITIONS", 4),
                security_protocol=_env("DRIFTLINE_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT"),
                sasl_mechanism=_env("DRIFTLINE_KAFKA_SASL_MECHANISM", "SCRAM-SHA-256"),
                sasl_username=os.environ.get("DRIFTLINE_KAFKA_SASL_USERNAME") or None,
                sasl_password=SecretStr(sasl_password) if sasl_password else None,
                topics=Topics(
                    **{
                        name: os.environ[f"DRIFTLINE_TOPIC_{name.upper()}"]
                        for name in Topics.model_fields
                        if os.environ.get(f"DRIFTLINE_TOPIC_{name.upper()}")
                    }
                ),
            ),
            clickhouse=ClickHouseSettings(
                host=_env("DRIFTLINE_CLICKHOUSE_HOST", "127.0.0.1"),
                port=_env_int("DRIFTLINE_CLICKHOUSE_PORT", 9000),
                http_port=_env_int("DRIFTLINE_CLICKHOUSE_HTTP_PORT", 8123),
                database=_env("DRIFTLINE_CLICKHOUSE_DATABASE", "driftline"),
                user=_env("DRIFTLINE_CLICKHOUSE_USER", "default"),
                password=SecretStr(os.environ.get("DRIFTLINE_CLICKHOUSE_PASSWORD", "")),
            ),
            triton=TritonSettings(
                host=_env("DRIFTLINE_TRITON_HOST", "127.0.0.1"),
                http_port=_env_int("DRIFTLINE_TRITON_HTTP_PORT", 8000),
                grpc_port=_env_int("DRIFTLINE_TRITON_GRPC_PORT", 8001),
                metrics_port=_env_int("DRIFTLINE_TRITON_METRICS_PORT", 8002),
                repository=Path(_env("DRIFTLINE_TRITON_REPOSITORY", str(REPO_ROOT / "triton_repo"))),
                exit_timeout_s=_env_int("DRIFTLINE_TRITON_EXIT_TIMEOUT", 15),
            ),
            web_host=_env("DRIFTLINE_WEB_HOST", "127.0.0.1"),
            web_port=_env_int("DRIFTLINE_WEB_PORT", 6066),
            dashboard_port=_env_int("DRIFTLINE_DASHBOARD_PORT", 8088),
        )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Process-wide settings; tests that change the environment call ``get_settings.cache_clear()``."""
    return Settings.from_env()
