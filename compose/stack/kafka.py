"""Kafka 4 in KRaft mode: one JVM that is both broker and controller, jars from Maven Central.

The jars are fetched once by Maven (compose/kafka/pom.xml) into ``$DRIFTLINE_CACHE/kafka-libs`` and
stamped with the pom's hash, so changing the pom refetches and a warm start costs nothing.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import shutil
import subprocess
import uuid
from pathlib import Path
from string import Template

from driftline.clients import kafka_client_kwargs
from driftline.compose.stack.process import StackError
from driftline.compose.stack.service import Service
from driftline.compose.stack.util import run_coro
from driftline.kafka_admin import create_missing_topics
from driftline.settings import Settings

KAFKA_DIR = Path(__file__).resolve().parent.parent / "kafka"
POM = KAFKA_DIR / "pom.xml"
SCRAM_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512")
JVM_OPTS = [
    "-Xms128m",
    "-Xmx512m",
    "-XX:+UseSerialGC",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
]


def jars_dir(settings: Settings) -> Path:
    """Where the broker's jars are cached (``$DRIFTLINE_CACHE/kafka-libs``)."""
    return settings.cache_dir / "kafka-libs"


def _pom_hash() -> str:
    return hashlib.sha256(POM.read_bytes()).hexdigest()[:16]


def jars_ready(settings: Settings) -> bool:
    """True if the cached jars exist and were fetched for the current pom.xml."""
    stamp = jars_dir(settings) / ".pom-hash"
    return (
        stamp.is_file() and stamp.read_text().strip() == _pom_hash() and any(jars_dir(settings).glob("*.jar"))
    )


def ensure_jars(settings: Settings) -> Path:
    """Fetch the broker's jars with Maven unless the cache already matches the pom."""
    target = jars_dir(settings)
    if jars_ready(settings):
        return target
    mvn = shutil.which("mvn")
    if mvn is None:
        raise StackError(
            "kafka: jars missing and `mvn` not found (apt-get install maven, or run compose/setup.sh)"
        )
    staging = target.with_name("kafka-libs.partial")
    shutil.rmtree(staging, ignore_errors=True)
    cmd = [
        mvn, "-q", "-B", "-f", str(POM), "dependency:copy-dependencies",
        "-DincludeScope=runtime", f"-DoutputDirectory={staging}",
    ]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0 or not any(staging.glob("*.jar")):
        out = (result.stdout + result.stderr)[-3000:]
        raise StackError(f"kafka: fetching jars with Maven failed (exit {result.returncode})\n{out}")
    (staging / ".pom-hash").write_text(_pom_hash())
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target


def _new_cluster_id() -> str:
    """Kafka's cluster id format: 16 random bytes, URL-safe base64 without padding.

    Like Kafka's own Uuid.randomUuid, never starting with '-' (argument parsers read that as a flag).
    """
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cid.startswith("-"):
            return cid


def _scram_user(settings: Settings) -> tuple[str, str]:
    """The SCRAM user/password the local broker is formatted with (same as its clients use)."""
    kafka = settings.kafka
    if not kafka.sasl_username or kafka.sasl_password is None:
        raise StackError(
            "kafka: SASL_PLAINTEXT needs DRIFTLINE_KAFKA__SASL_USERNAME and DRIFTLINE_KAFKA__SASL_PASSWORD"
        )
    password = kafka.sasl_password.get_secret_value()
    for label, value in (("username", kafka.sasl_username), ("password", password)):
        if any(c in value for c in '",=[]\\\n\r'):
            raise StackError(f'kafka: the SASL {label} may not contain any of  " , = [ ] \\ or newlines')
    return kafka.sasl_username, password


class KafkaService(Service):
    """The Kafka broker+controller JVM of the local stack (KRaft, optional SASL/SCRAM)."""

    name = "kafka"
    start_timeout_s = 90.0
    stop_grace_s = 30.0

    @property
    def ports(self) -> dict[str, int]:
        """The broker and KRaft controller ports from settings."""
        return {"broker": self.settings.kafka.port, "controller": self.settings.kafka.controller_port}

    @property
    def log_file(self) -> Path:
        """The broker's own log (``logs/server.log``)."""
        return self.log_dir / "server.log"

    @property
    def data_dir(self) -> Path:
        """The KRaft log directory (formatted once, kept across restarts)."""
        return self.home / "data"

    @property
    def config_file(self) -> Path:
        """The generated ``server.properties`` (mode 0600: it may hold the SCRAM password)."""
        return self.home / "server.properties"

    def check_requirements(self) -> None:
        """Raise StackError without Java; fetch the jars with Maven if the cache is stale."""
        if shutil.which("java") is None:
            raise StackError(
                "kafka: `java` not found (Java 17+ needed; apt-get install openjdk-17-jre-headless)"
            )
        ensure_jars(self.settings)

    def _java(self, main: str, *args: str) -> list[str]:
        return [
            "java", *JVM_OPTS,
            f"-Dlog4j2.configurationFile={KAFKA_DIR / 'log4j2.xml'}",
            f"-Dkafka.logs.dir={self.log_dir}",
            "-cp", f"{jars_dir(self.settings)}/*",
            main, *args,
        ]  # fmt: skip

    @property
    def sasl(self) -> bool:
        """SASL/SCRAM on the client listener (opt-in: DRIFTLINE_KAFKA__SECURITY_PROTOCOL=SASL_PLAINTEXT)."""
        return self.settings.kafka.security_protocol == "SASL_PLAINTEXT"

    def _security_lines(self) -> str:
        if not self.sasl:
            return ""
        kafka = self.settings.kafka
        if kafka.sasl_mechanism not in SCRAM_MECHANISMS:
            raise StackError(
                f"kafka: the local stack supports SASL mechanisms {SCRAM_MECHANISMS}, "
                f"not {kafka.sasl_mechanism!r} (DRIFTLINE_KAFKA__SASL_MECHANISM)"
            )
        user, password = _scram_user(self.settings)
        jaas = (
            "org.apache.kafka.common.security.scram.ScramLoginModule required "
            f'username="{user}" password="{password}";'
        )
        listener = f"listener.name.sasl_plaintext.{kafka.sasl_mechanism.lower()}"
        return (
            "# SASL/SCRAM (DRIFTLINE_KAFKA__SECURITY_PROTOCOL=SASL_PLAINTEXT); the controller listener\n"
            "# stays PLAINTEXT on 127.0.0.1.\n"
            f"sasl.enabled.mechanisms={kafka.sasl_mechanism}\n"
            f"sasl.mechanism.inter.broker.protocol={kafka.sasl_mechanism}\n"
            f"{listener}.sasl.jaas.config={jaas}\n"
        )

    def prepare(self) -> None:
        """Write server.properties and format the storage on first use (idempotent)."""
        template = Template((KAFKA_DIR / "server.properties.template").read_text())
        self.config_file.touch(mode=0o600)
        self.config_file.chmod(0o600)  # may hold the SCRAM password
        self.config_file.write_text(
            template.substitute(
                host=self.host,
                port=self.settings.kafka.port,
                controller_port=self.settings.kafka.controller_port,
                data_dir=self.data_dir,
                partitions=self.settings.kafka.partitions,
                protocol="SASL_PLAINTEXT" if self.sasl else "PLAINTEXT",
                security=self._security_lines(),
            )
        )
        scram_file = self.home / "scram-users"
        if (self.data_dir / "meta.properties").is_file():
            if self.sasl:
                user, _ = _scram_user(self.settings)
                known = scram_file.read_text().split() if scram_file.is_file() else []
                if user not in known:
                    raise StackError(
                        f"kafka: storage in {self.data_dir} was formatted without SCRAM user {user!r}; "
                        "SCRAM users are created when storage is formatted, so use a fresh "
                        "DRIFTLINE_RUN_DIR (or stop the stack and delete that folder)"
                    )
            return
        id_file = self.home / "cluster.id"
        if not id_file.is_file():
            id_file.write_text(_new_cluster_id())
        self.data_dir.mkdir(parents=True, exist_ok=True)
        scram: list[str] = []
        if self.sasl:
            user, password = _scram_user(self.settings)
            # the format tool only takes SCRAM credentials as an argument; the process lives ~2s
            scram = [f"--add-scram={self.settings.kafka.sasl_mechanism}=[name={user},password={password}]"]
        cmd = self._java(
            "kafka.tools.StorageTool", "format", "--standalone", "--ignore-formatted",
            f"--cluster-id={id_file.read_text().strip()}", f"--config={self.config_file}", *scram,
        )  # fmt: skip
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            out = (result.stdout + result.stderr)[-3000:]
            if self.sasl:
                out = out.replace(_scram_user(self.settings)[1], "***")
            raise StackError(f"kafka: formatting storage failed\n{out}")
        if self.sasl:
            scram_file.write_text(_scram_user(self.settings)[0] + "\n")

    def command(self) -> list[str]:
        """The JVM command line running ``kafka.Kafka`` with the generated config."""
        return self._java("kafka.Kafka", str(self.config_file))

    def probe(self) -> str | None:
        """Healthy when a metadata request lists at least one broker."""
        # aiokafka logs every refused connection at ERROR; while polling a starting broker that is
        # expected noise, so it is muted for the probe and the reason is returned instead.
        aiokafka_log = logging.getLogger("aiokafka")
        level = aiokafka_log.level
        aiokafka_log.setLevel(logging.CRITICAL)
        try:
            run_coro(_metadata(self.settings, f"{self.host}:{self.settings.kafka.port}"), timeout=10)
        except Exception as exc:  # any failure means "not healthy yet"; the reason is shown
            return f"metadata request failed: {type(exc).__name__}: {exc}"[:200]
        finally:
            aiokafka_log.setLevel(level)
        return None


async def _metadata(settings: Settings, bootstrap: str) -> None:
    from aiokafka import AIOKafkaClient

    client = AIOKafkaClient(**kafka_client_kwargs(settings, bootstrap=bootstrap, request_timeout_ms=5000))
    try:
        await client.bootstrap()
        await client.fetch_all_metadata()
        if not client.cluster.brokers():
            raise RuntimeError("no brokers in metadata")
    finally:
        await client.close()


def ensure_topics(settings: Settings, bootstrap: str | None = None) -> list[str]:
    """Create the topics named in settings that do not exist yet; returns the ones created.

    Names, partitions, replication factor, ``min.insync.replicas`` and message limit all come from
    the settings (``driftline.kafka_admin``).

    ``bootstrap`` defaults to the local stack's broker; ``driftline stack init`` passes the
    configured cluster instead.
    """
    bootstrap = bootstrap or f"127.0.0.1:{settings.kafka.port}"
    try:
        return run_coro(
            create_missing_topics(settings, settings.kafka.topics.all(), bootstrap=bootstrap),
            60,
        )
    except Exception as exc:
        raise StackError(f"kafka: creating topics failed: {type(exc).__name__}: {exc}") from exc
