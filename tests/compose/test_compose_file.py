"""The production docker-compose file agrees with the local stack: ports, topics, schema files."""

from __future__ import annotations

from pathlib import Path

import yaml

from driftline.schema.migrate import discover
from driftline.settings import REPO_ROOT, Settings

COMPOSE = REPO_ROOT / "compose" / "docker-compose.yml"


def _load() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def _published(service: dict) -> set[int]:
    ports = set()
    for spec in service.get("ports", []):
        text = str(spec).split(":")
        ports.add(int(text[-1].split("/")[0]))
    return ports


def test_compose_services_and_ports_match_settings(monkeypatch):
    for key in list(__import__("os").environ):
        if key.startswith("DRIFTLINE_"):
            monkeypatch.delenv(key)
    s = Settings()  # defaults, as the local stack uses them
    services = _load()["services"]
    assert {"kafka", "clickhouse", "triton", "worker", "updater", "dashboard"} <= set(services)
    assert s.kafka.port in _published(services["kafka"])
    assert {s.clickhouse.port, s.clickhouse.http_port} <= _published(services["clickhouse"])
    assert {s.triton.http_port, s.triton.grpc_port, s.triton.metrics_port} <= _published(services["triton"])
    assert s.dashboard_port in _published(services["dashboard"])


def test_compose_triton_has_gpu_and_model_repo():
    triton = _load()["services"]["triton"]
    # built FROM the NGC image (plus torch/transformers/peft for the python backend)
    dockerfile = COMPOSE.parent / triton["build"]["dockerfile"].removeprefix("compose/")
    base = dockerfile.read_text().split("FROM ", 1)[1].split()[0]
    assert base.startswith("nvcr.io/nvidia/tritonserver:") and base.endswith("-py3")
    _assert_installs_driftline(dockerfile)
    devices = triton["deploy"]["resources"]["reservations"]["devices"]
    assert any("gpu" in d.get("capabilities", []) for d in devices)
    assert any("triton_repo" in str(v) for v in triton["volumes"])
    assert "--model-control-mode=explicit" in " ".join(map(str, triton["command"]))


def test_compose_grafana_mounts_the_provisioning() -> None:
    grafana = _load()["services"]["grafana"]
    mounts = " ".join(map(str, grafana["volumes"]))
    for folder in ("grafana/provisioning", "grafana/dashboards"):
        assert folder in mounts and (COMPOSE.parent / folder).is_dir()


def test_compose_topics_and_migrations_match():
    doc = _load()
    text = COMPOSE.read_text()
    for topic in Settings().kafka.topics.all():
        assert topic in text, f"topic {topic} not created by compose"
    # the migrations ship inside the package; the one-shot migrate service runs the stack's runner
    assert doc["services"]["migrate"]["command"] == ["driftline", "stack", "init"]
    assert discover(), "no migration files"
    env = doc["services"]["worker"].get("environment", {})
    assert env.get("DRIFTLINE_KAFKA__BOOTSTRAP") == "kafka:9092"


def _assert_installs_driftline(dockerfile: Path) -> None:
    """The image copies every folder that pyproject maps into ``driftline`` and pip-installs it."""
    import tomllib

    text = dockerfile.read_text()
    mapping = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    for folder in mapping.values():
        assert f"COPY {folder} {folder}" in text, f"{dockerfile.name} does not copy {folder}/"
    assert "pip install" in text and " . " in text.replace("\\\n", " ")


def test_worker_image_installs_the_package() -> None:
    _assert_installs_driftline(COMPOSE.parent / "Dockerfile")
