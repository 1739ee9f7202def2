"""Kafka 4 in KRaft mode: one JVM per node that is both broker and controller, jars from Maven Central.

One node by default; ``--cluster`` runs three SASL_SSL voters on loopback, the rehearsal of a real deployment.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import shutil
import subprocess
import threading
import uuid
from pathlib import Path
from string import Template

from driftline.clients import TLS_PROTOCOLS, KafkaAuthError, check_kafka, kafka_client_kwargs
from driftline.compose.stack import process
from driftline.compose.stack.process import StackError
from driftline.compose.stack.service import Service
from driftline.compose.stack.util import run_coro
from driftline.kafka_admin import create_missing_topics
from driftline.settings import Settings

KAFKA_DIR = Path(__file__).resolve().parent.parent / "kafka"
POM = KAFKA_DIR / "pom.xml"
SCRAM_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512")
#: Guards what cluster nodes share (jars, CA, cluster id) while `stack up` prepares them in threads.
_SHARED = threading.RLock()
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
    with _SHARED:
        return _ensure_jars(settings)


def _ensure_jars(settings: Settings) -> Path:
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
            f"kafka: {kafka.security_protocol} needs DRIFTLINE_KAFKA__SASL_USERNAME and "
            "DRIFTLINE_KAFKA__SASL_PASSWORD"
        )
    password = kafka.sasl_password.get_secret_value()
    for label, value in (("username", kafka.sasl_username), ("password", password)):
        if any(c in value for c in '",=[]\\\n\r'):
            raise StackError(f'kafka: the SASL {label} may not contain any of  " , = [ ] \\ or newlines')
    return kafka.sasl_username, password


#: Security protocols the local stack can run its client and inter-broker listener with.
STACK_PROTOCOLS = ("PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL")
#: Brokers of ``driftline stack up --cluster``.
CLUSTER_NODES = 3


def kafka_dir(settings: Settings) -> Path:
    """The stack's Kafka folder: the single node's home, or the cluster's (``node-<i>/``, ``tls/``)."""
    return settings.run_dir / "kafka"


def tls_dir(settings: Settings) -> Path:
    """Where the stack writes its CA and broker certificates (PEM)."""
    return kafka_dir(settings) / "tls"


def stack_ca_file(settings: Settings) -> Path:
    """The CA certificate that signed the local brokers' certificates."""
    return tls_dir(settings) / "ca.pem"


def node_ports(settings: Settings, node: int) -> tuple[int, int]:
    """(client port, controller port) of node ``node`` (1-based): ``port + 2(node-1)`` and likewise."""
    kafka = settings.kafka
    return kafka.port + 2 * (node - 1), kafka.controller_port + 2 * (node - 1)


def cluster_settings(settings: Settings, nodes: int = CLUSTER_NODES) -> Settings:
    """``settings`` for the ``--cluster`` rehearsal: ``nodes`` brokers, SASL_SSL, RF ``nodes``, min ISR 2.

    Replication factor and ``min.insync.replicas`` set in the environment are kept; the bootstrap
    list is re-derived over every node unless it was set explicitly.
    """
    kafka = settings.kafka
    explicit = kafka.model_fields_set
    data = dict(kafka)
    data.update(nodes=nodes)
    if kafka.security_protocol != "SASL_SSL":
        data["security_protocol"] = "SASL_SSL"
    if "replication_factor" not in explicit:
        data["replication_factor"] = nodes
    if "min_insync_replicas" not in explicit:
        data["min_insync_replicas"] = min(2, nodes)
    if "bootstrap" not in explicit:
        data["bootstrap"] = ""
    return settings.model_copy(update={"kafka": type(kafka).model_validate(data)})


def stack_client_settings(settings: Settings) -> Settings:
    """``settings`` as the stack's own clients use them: TLS verifies against the stack's CA by default."""
    kafka = settings.kafka
    if kafka.security_protocol in TLS_PROTOCOLS and kafka.ssl_cafile is None:
        return settings.model_copy(
            update={"kafka": kafka.model_copy(update={"ssl_cafile": stack_ca_file(settings)})}
        )
    return settings


def _openssl(*args: str, cwd: Path) -> None:
    result = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise StackError(f"kafka: openssl {args[0]} failed: {(result.stdout + result.stderr)[-1500:]}")


def ensure_certificates(settings: Settings, node: int) -> Path:
    """Create the stack CA (once) and node ``node``'s key + certificate (SAN 127.0.0.1, localhost).

    Returns the node's PEM keystore (unencrypted PKCS#8 key followed by its certificate and the CA,
    mode 0600), the form Kafka reads with ``ssl.keystore.type=PEM``. EC P-256 keys keep it fast.
    """
    with _SHARED:
        return _ensure_certificates(settings, node)


def _ensure_certificates(settings: Settings, node: int) -> Path:
    folder = tls_dir(settings)
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    ca_key, ca_cert = folder / "ca.key", folder / "ca.pem"
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    if not (ca_key.is_file() and ca_cert.is_file()):
        _openssl(
            "req", "-x509", *ec, "-keyout", ca_key.name, "-out", ca_cert.name, "-days", "3650",
            "-subj", "/CN=driftline local Kafka CA",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            cwd=folder,
        )  # fmt: skip
    keystore = folder / f"node-{node}.pem"
    if keystore.is_file():
        return keystore
    key, csr, cert, ext = (folder / f"node-{node}.{suffix}" for suffix in ("key", "csr", "crt", "ext"))
    ext.write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth,clientAuth\n"
    )
    _openssl("req", *ec, "-keyout", key.name, "-out", csr.name, "-subj", f"/CN=kafka-{node}", cwd=folder)
    _openssl(
        "x509", "-req", "-in", csr.name, "-CA", ca_cert.name, "-CAkey", ca_key.name, "-CAcreateserial",
        "-out", cert.name, "-days", "825", "-extfile", ext.name,
        cwd=folder,
    )  # fmt: skip
    keystore.touch(mode=0o600)
    keystore.write_text(key.read_text() + cert.read_text() + ca_cert.read_text())
    for path in (key, csr, ext):
        path.unlink()
    return keystore


class KafkaService(Service):
    """One Kafka broker+controller JVM of the local stack (KRaft); ``nodes`` of them form the cluster.

    With ``DRIFTLINE_KAFKA__NODES=1`` (default) the node lives in ``<run_dir>/kafka`` as before; with
    more, node ``i`` lives in ``<run_dir>/kafka/node-<i>`` on ``node_ports`` and the nodes form a
    static quorum of ``nodes`` voters. The client and inter-broker listener speaks the configured
    protocol (PLAINTEXT, SASL_PLAINTEXT or SASL_SSL with SCRAM); the controller listener is
    loopback-only, over TLS whenever the client listener is.
    """

    name = "kafka"
    start_timeout_s = 90.0
    stop_grace_s = 30.0

    def __init__(self, settings: Settings, node: int = 1) -> None:
        self.node = node
        self.nodes = settings.kafka.nodes
        if self.nodes > 1:
            self.name = f"kafka-{node}"
        super().__init__(settings)
        if self.nodes > 1:
            self.home = kafka_dir(settings) / f"node-{node}"
            self.pid_file = self.home / f"{self.name}.pid"
            self.log_dir = self.home / "logs"

    @property
    def ports(self) -> dict[str, int]:
        """This node's broker and KRaft controller ports."""
        broker, controller = node_ports(self.settings, self.node)
        return {"broker": broker, "controller": controller}

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

    @property
    def protocol(self) -> str:
        """The security protocol of the client and inter-broker listener."""
        protocol = self.settings.kafka.security_protocol
        if protocol not in STACK_PROTOCOLS:
            raise StackError(
                f"kafka: the local stack runs {', '.join(STACK_PROTOCOLS)} listeners, not {protocol!r} "
                "(DRIFTLINE_KAFKA__SECURITY_PROTOCOL)"
            )
        return protocol

    @property
    def sasl(self) -> bool:
        """SASL/SCRAM on the client listener (DRIFTLINE_KAFKA__SECURITY_PROTOCOL=SASL_*)."""
        return self.protocol.startswith("SASL")

    @property
    def tls(self) -> bool:
        """TLS on every listener (DRIFTLINE_KAFKA__SECURITY_PROTOCOL=SASL_SSL)."""
        return self.protocol in TLS_PROTOCOLS

    def check_requirements(self) -> None:
        """Raise StackError without Java (or openssl for TLS); fetch the jars if the cache is stale."""
        if shutil.which("java") is None:
            raise StackError(
                "kafka: `java` not found (Java 17+ needed; apt-get install openjdk-17-jre-headless)"
            )
        if self.tls and shutil.which("openssl") is None:
            raise StackError("kafka: `openssl` not found (needed to create the TLS certificates)")
        ensure_jars(self.settings)

    def _java(self, main: str, *args: str, tool: bool = False) -> list[str]:
        # a short-lived tool (storage format) starts faster without the optimising JIT
        quick = ["-XX:TieredStopAtLevel=1"] if tool else []
        return [
            "java", *JVM_OPTS, *quick,
            f"-Dlog4j2.configurationFile={KAFKA_DIR / 'log4j2.xml'}",
            f"-Dkafka.logs.dir={self.log_dir}",
            "-cp", f"{jars_dir(self.settings)}/*",
            main, *args,
        ]  # fmt: skip

    def _quorum_line(self) -> str:
        if self.nodes == 1:
            return f"controller.quorum.bootstrap.servers={self.host}:{self.ports['controller']}"
        voters = ",".join(
            f"{i}@{self.host}:{node_ports(self.settings, i)[1]}" for i in range(1, self.nodes + 1)
        )
        return f"controller.quorum.voters={voters}"

    def _security_lines(self) -> str:
        lines = []
        if self.sasl:
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
            listener = f"listener.name.{self.protocol.lower()}.{kafka.sasl_mechanism.lower()}"
            lines += [
                f"# SASL/SCRAM (DRIFTLINE_KAFKA__SECURITY_PROTOCOL={self.protocol}), also between brokers",
                f"sasl.enabled.mechanisms={kafka.sasl_mechanism}",
                f"sasl.mechanism.inter.broker.protocol={kafka.sasl_mechanism}",
                f"{listener}.sasl.jaas.config={jaas}",
            ]
        if self.tls:
            keystore = ensure_certificates(self.settings, self.node)
            lines += [
                "# TLS on every listener: this node's key and certificate, the stack CA as trust store",
                "ssl.keystore.type=PEM",
                f"ssl.keystore.location={keystore}",
                "ssl.truststore.type=PEM",
                f"ssl.truststore.location={stack_ca_file(self.settings)}",
                "ssl.client.auth=requested",
                "ssl.endpoint.identification.algorithm=https",
            ]
        return "\n".join(lines) + "\n" if lines else ""

    def prepare(self) -> None:
        """Write server.properties (and certificates) and format the storage on first use (idempotent)."""
        template = Template((KAFKA_DIR / "server.properties.template").read_text())
        self.config_file.touch(mode=0o600)
        self.config_file.chmod(0o600)  # may hold the SCRAM password
        replication = self.nodes
        self.config_file.write_text(
            template.substitute(
                node_id=self.node,
                nodes=self.nodes,
                quorum=self._quorum_line(),
                host=self.host,
                port=self.ports["broker"],
                controller_port=self.ports["controller"],
                data_dir=self.data_dir,
                partitions=self.settings.kafka.partitions,
                replication=replication,
                min_isr=min(self.settings.kafka.min_insync_replicas, replication),
                protocol=self.protocol,
                controller_protocol="SSL" if self.tls else "PLAINTEXT",
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
        id_file = kafka_dir(self.settings) / "cluster.id"
        with _SHARED:
            if not id_file.is_file():
                id_file.parent.mkdir(parents=True, exist_ok=True)
                id_file.write_text(_new_cluster_id())
        self.data_dir.mkdir(parents=True, exist_ok=True)
        scram: list[str] = []
        if self.sasl:
            user, password = _scram_user(self.settings)
            # the format tool only takes SCRAM credentials as an argument; the process lives ~2s
            scram = [f"--add-scram={self.settings.kafka.sasl_mechanism}=[name={user},password={password}]"]
        # one node: a dynamic quorum with this node as its only voter; more: the static voters list
        quorum = ["--standalone"] if self.nodes == 1 else []
        cmd = self._java(
            "kafka.tools.StorageTool",
            "format",
            *quorum,
            "--ignore-formatted",
            f"--cluster-id={id_file.read_text().strip()}",
            f"--config={self.config_file}",
            *scram,
            tool=True,
        )
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
        """Healthy when this node's metadata lists this node; rejected TLS/SASL raises StackError."""
        # aiokafka logs every refused connection at ERROR; while polling a starting broker that is
        # expected noise, so it is muted for the probe and the reason is returned instead.
        client_settings = stack_client_settings(self.settings)
        bootstrap = f"{self.host}:{self.ports['broker']}"
        aiokafka_log = logging.getLogger("aiokafka")
        level = aiokafka_log.level
        aiokafka_log.setLevel(logging.CRITICAL)
        try:
            run_coro(_metadata(client_settings, bootstrap, self.node), timeout=10)
        except KafkaAuthError as exc:  # a bad CA file: no point waiting
            raise StackError(f"{self.name}: {exc}") from None
        except Exception as exc:  # any failure means "not healthy yet"; the reason is shown
            if process.port_open(self.host, self.ports["broker"], timeout=0.5):
                _raise_if_rejected(self.name, client_settings, bootstrap)
            return f"metadata request failed: {type(exc).__name__}: {exc}"[:200]
        finally:
            aiokafka_log.setLevel(level)
        return None


def _raise_if_rejected(name: str, settings: Settings, bootstrap: str) -> None:
    """Raise StackError when the listener answers but rejects our TLS or SASL settings."""
    node = settings.kafka.model_copy(update={"bootstrap": bootstrap})
    try:
        run_coro(check_kafka(node, timeout_s=5), timeout=10)
    except KafkaAuthError as exc:
        raise StackError(f"{name}: {exc}") from None
    except Exception:  # not (yet) answering: no verdict
        return


def kafka_services(settings: Settings) -> list[KafkaService]:
    """The configured Kafka node(s): one service per node."""
    return [KafkaService(settings, node) for node in range(1, settings.kafka.nodes + 1)]


def recorded_kafka_services(settings: Settings) -> list[KafkaService]:
    """Kafka nodes of this run dir with a pid file, whatever the settings say (``stack down`` stops them)."""
    found = []
    single = KafkaService(
        settings.model_copy(update={"kafka": settings.kafka.model_copy(update={"nodes": 1})})
    )
    if single.pid_file.is_file():
        found.append(single)
    homes = sorted(kafka_dir(settings).glob("node-*/kafka-*.pid"))
    if homes:
        nodes = max(int(p.parent.name.removeprefix("node-")) for p in homes)
        many = settings.model_copy(
            update={"kafka": settings.kafka.model_copy(update={"nodes": max(nodes, 2)})}
        )
        found += [KafkaService(many, int(p.parent.name.removeprefix("node-"))) for p in homes]
    return found


async def _metadata(settings: Settings, bootstrap: str, node: int) -> None:
    from aiokafka import AIOKafkaClient

    client = AIOKafkaClient(**kafka_client_kwargs(settings, bootstrap=bootstrap, request_timeout_ms=5000))
    try:
        await client.bootstrap()
        metadata = await client.fetch_all_metadata()
        ids = {broker.nodeId for broker in metadata.brokers()}
        if node not in ids:
            raise RuntimeError(f"node {node} not in the metadata yet (brokers {sorted(ids)})")
    finally:
        await client.close()


def ensure_topics(settings: Settings, bootstrap: str | None = None) -> list[str]:
    """Create the topics named in settings that do not exist yet; returns the ones created.

    Names, partitions, replication factor, ``min.insync.replicas`` and message limit all come from
    the settings (``driftline.kafka_admin``).

    ``bootstrap`` defaults to the local stack's broker; ``driftline stack init`` passes the
    configured cluster instead.
    """
    if bootstrap is None:
        settings = stack_client_settings(settings)
        nodes = range(1, settings.kafka.nodes + 1)
        bootstrap = ",".join(f"127.0.0.1:{node_ports(settings, i)[0]}" for i in nodes)
    try:
        return run_coro(
            create_missing_topics(settings, settings.kafka.topics.all(), bootstrap=bootstrap),
            60,
        )
    except Exception as exc:
        raise StackError(f"kafka: creating topics failed: {type(exc).__name__}: {exc}") from exc
