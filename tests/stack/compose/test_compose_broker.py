"""compose/kafka/compose-broker.sh really runs a SASL/SCRAM broker that ``driftline stack init`` can use.

The script is the compose ``kafka`` service's entrypoint (apache/kafka 4.1.1). Without Docker it is
run here against the local stack's Kafka jars (the same 4.1.1 release, ``$DRIFTLINE_CACHE/kafka-libs``)
through stand-ins for the image's ``kafka-storage.sh`` and ``kafka-server-start.sh``, in a fresh
network namespace (its ports are the real stack's) where ``kafka`` resolves to the loopback, as the
compose network would. Then driftline's own clients create the topics with SASL, read their configs,
and a wrong password is refused; a restart finds the formatted storage and keeps the SCRAM user.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from driftline.compose.stack.kafka import KAFKA_DIR, jars_dir, jars_ready
from driftline.settings import REPO_ROOT, Topics, get_settings

SCRIPT = REPO_ROOT / "compose" / "kafka" / "compose-broker.sh"

CLIENT = """
import asyncio, json
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from pydantic import SecretStr
from driftline.clients import KafkaAuthError, check_kafka, kafka_client_kwargs
from driftline.compose.stack.kafka import ensure_topics
from driftline.settings import get_settings

s = get_settings()
out = {"created": ensure_topics(s, s.kafka.bootstrap)}
out["via_host_listener"] = ensure_topics(s, "127.0.0.1:9094")

async def configs():
    admin = AIOKafkaAdminClient(**kafka_client_kwargs(s))
    await admin.start()
    try:
        topic = ConfigResource(ConfigResourceType.TOPIC, s.kafka.topics.feedback)
        [resp] = await admin.describe_configs([topic])
        return {e[0]: e[1] for res in resp.resources for e in res[4]}
    finally:
        await admin.close()

found = asyncio.run(configs())
out["configs"] = {k: found[k] for k in ("max.message.bytes", "min.insync.replicas")}
try:
    asyncio.run(check_kafka(s.kafka.model_copy(update={"sasl_password": SecretStr("wrong")})))
    out["wrong_password"] = "accepted"
except KafkaAuthError:
    out["wrong_password"] = "refused"
print(json.dumps(out))
"""

INNER = """
set -e
ip link set lo up
mount --bind "$WORK/hosts" /etc/hosts
bash "$SCRIPT" >>"$WORK/broker.log" 2>&1 &
broker=$!
for _ in $(seq 1 90); do (exec 3<>/dev/tcp/127.0.0.1/9092) 2>/dev/null && break; sleep 1; done
sleep 2
status=0
(cd / && "$PYTHON" "$WORK/client.py") || status=$?
kill "$broker"; wait "$broker" || true
exit $status
"""


def _prerequisites() -> str | None:
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("ip"):
        return "needs root, unshare and ip (a private network namespace)"
    if not shutil.which("java") or not jars_ready(get_settings()):
        return "needs java and the local stack's Kafka jars (compose/setup.sh)"
    return None


@pytest.mark.slow
@pytest.mark.skipif(_prerequisites() is not None, reason=str(_prerequisites()))
def test_compose_broker_serves_sasl_scram_to_driftline(tmp_path: Path) -> None:
    jars = jars_dir(get_settings())
    java = f'exec java -Xmx512m -XX:+UseSerialGC -cp "{jars}/*" -Dkafka.logs.dir={tmp_path}/logs'
    java += f" -Dlog4j2.configurationFile={KAFKA_DIR}/log4j2.xml"
    (tmp_path / "bin").mkdir()
    tools = {"kafka-storage.sh": "kafka.tools.StorageTool", "kafka-server-start.sh": "kafka.Kafka"}
    for name, main in tools.items():
        (tmp_path / "bin" / name).write_text(f'#!/bin/bash\n{java} {main} "$@"\n')
        (tmp_path / "bin" / name).chmod(0o755)
    hostname = subprocess.run(["hostname"], capture_output=True, text=True).stdout.strip()
    (tmp_path / "hosts").write_text(f"127.0.0.1 localhost kafka {hostname}\n")
    (tmp_path / "client.py").write_text(CLIENT)
    (tmp_path / "inner.sh").write_text(INNER)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLINE_")}
    env |= {
        "WORK": str(tmp_path),
        "SCRIPT": str(SCRIPT),
        "PYTHON": sys.executable,
        "KAFKA_HOME": str(tmp_path),
        "KAFKA_DATA_DIR": str(tmp_path / "data"),
        "KAFKA_CONFIG_DIR": str(tmp_path / "config"),
        "DRIFTLINE_CACHE": str(get_settings().cache_dir),
        "DRIFTLINE_KAFKA__BOOTSTRAP": "kafka:9092",
        "DRIFTLINE_KAFKA__SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "DRIFTLINE_KAFKA__SASL_USERNAME": "driftline",
        "DRIFTLINE_KAFKA__SASL_PASSWORD": "a-test-password",
    }
    runs = []
    for _ in range(2):  # the second start finds the storage formatted
        done = subprocess.run(
            ["unshare", "--net", "--mount", "bash", str(tmp_path / "inner.sh")],
            env=env, capture_output=True, text=True, timeout=240,
        )  # fmt: skip
        log = (tmp_path / "broker.log").read_text() if (tmp_path / "broker.log").exists() else ""
        assert done.returncode == 0, f"{done.stdout[-2000:]}\n{done.stderr[-3000:]}\nbroker:\n{log[-3000:]}"
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    first, second = runs
    assert len(first["created"]) == len(Topics.model_fields)
    assert first["via_host_listener"] == [] and second["created"] == []
    assert first["configs"] == {"max.message.bytes": str(32 << 20), "min.insync.replicas": "1"}
    assert first["wrong_password"] == second["wrong_password"] == "refused"
    log = (tmp_path / "broker.log").read_text()
    assert log.count("storage formatted with SCRAM user driftline") == 1
    assert "a-test-password" not in log
    config = tmp_path / "config" / "server.properties"
    assert config.stat().st_mode & 0o077 == 0, "server.properties (holds the password) is readable by others"
