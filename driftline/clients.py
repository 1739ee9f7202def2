"""The one place that turns settings into authenticated ClickHouse, Kafka and Triton clients.

Every component gets its connections here, so security settings (ClickHouse password, Kafka SASL/TLS,
Triton address) reach all of them at once; secrets are read only when a client is built.
"""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING, Any, Literal, overload

from driftline.settings import ClickHouseSettings, KafkaSettings, Settings, TritonSettings, get_settings

if TYPE_CHECKING:
    import tritonclient.grpc
    import tritonclient.grpc.aio
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from clickhouse_driver import Client

#: ClickHouse error codes that mean "who you are" was rejected (18.16: 192 unknown user, 193 wrong
#: password, 194 password required; modern servers: 516).
AUTH_ERROR_CODES = frozenset({192, 193, 194, 516})


class ClickHouseAuthError(RuntimeError):
    """ClickHouse refused the configured user or password; says which env vars to check."""


class KafkaAuthError(RuntimeError):
    """The Kafka broker refused the SASL credentials; says which env vars to check."""


class KafkaTLSError(KafkaAuthError):
    """A Kafka TLS set-up or handshake failed (CA, client certificate, host name); names the setting."""


def _clickhouse_settings(settings: Settings | ClickHouseSettings | None) -> ClickHouseSettings:
    if settings is None:
        return get_settings().clickhouse
    return settings.clickhouse if isinstance(settings, Settings) else settings


def _kafka_settings(settings: Settings | KafkaSettings | None) -> KafkaSettings:
    if settings is None:
        return get_settings().kafka
    return settings.kafka if isinstance(settings, Settings) else settings


def clickhouse_client(
    settings: Settings | ClickHouseSettings | None = None,
    /,
    *,
    database: str | None = None,
    host: str | None = None,
    **options: Any,
) -> Client:
    """A clickhouse-driver ``Client`` with the configured user and password.

    ``database`` defaults to the settings' database (pass ``"default"`` to bootstrap it);
    ``host`` overrides the configured host (the local stack always listens on 127.0.0.1);
    ``options`` go to ``Client`` unchanged (timeouts, ``settings={...}``: the driftline settings are
    positional-only so that ClickHouse's own ``settings`` keyword passes through).
    """
    ch = _clickhouse_settings(settings)
    from clickhouse_driver import Client

    options.setdefault("connect_timeout", 5)
    options.setdefault("send_receive_timeout", 30)
    return Client(
        host=host or ch.host,
        port=ch.port,
        user=ch.user,
        password=ch.password.get_secret_value(),
        database=database or ch.database,
        **options,
    )


def is_auth_error(exc: BaseException) -> bool:
    """True if a clickhouse-driver exception means the credentials were rejected."""
    code = getattr(exc, "code", None)
    return code in AUTH_ERROR_CODES or "authentication failed" in str(exc).lower()


def explain_clickhouse_error(
    exc: BaseException, settings: Settings | ClickHouseSettings | None = None
) -> str:
    """A one-line reason for a failed ClickHouse call that never contains the password."""
    ch = _clickhouse_settings(settings)
    if is_auth_error(exc):
        return (
            f"clickhouse {ch.host}:{ch.port}: authentication failed for user {ch.user!r} "
            "(check DRIFTLINE_CLICKHOUSE__USER / DRIFTLINE_CLICKHOUSE__PASSWORD)"
        )
    text = str(exc).split("Stack trace:")[0].strip()
    secret = ch.password.get_secret_value()
    if secret:
        text = text.replace(secret, "***")
    return f"clickhouse {ch.host}:{ch.port}: {type(exc).__name__}: {text}"[:500]


def check_clickhouse(
    settings: Settings | ClickHouseSettings | None = None, *, host: str | None = None
) -> None:
    """Run ``SELECT 1`` with the configured credentials; raise ``ClickHouseAuthError`` on a bad login."""
    client = clickhouse_client(settings, database="default", host=host, connect_timeout=3)
    try:
        client.execute("SELECT 1")
    except Exception as exc:
        if is_auth_error(exc):
            raise ClickHouseAuthError(explain_clickhouse_error(exc, settings)) from None
        raise
    finally:
        client.disconnect()


#: Kafka security protocols that run over TLS (they need ``kafka_ssl_context``).
TLS_PROTOCOLS = frozenset({"SSL", "SASL_SSL"})


def kafka_ssl_context(settings: Settings | KafkaSettings | None = None) -> ssl.SSLContext | None:
    """The one TLS context of every Kafka client (aiokafka and Faust), or None for a non-TLS protocol.

    Verifies the broker against ``DRIFTLINE_KAFKA__SSL_CAFILE`` (unset: the system CAs), checks its
    host name unless ``DRIFTLINE_KAFKA__SSL_CHECK_HOSTNAME`` is false, and presents the client
    certificate ``DRIFTLINE_KAFKA__SSL_CERTFILE`` / ``_SSL_KEYFILE`` if one is set. A missing or
    unreadable file raises ``KafkaTLSError`` naming the setting.
    """
    kafka = _kafka_settings(settings)
    if kafka.security_protocol not in TLS_PROTOCOLS:
        return None
    cafile = kafka.ssl_cafile
    try:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(cafile) if cafile else None)
    except (OSError, ssl.SSLError) as exc:
        raise KafkaTLSError(
            f"kafka: cannot load the CA file {str(cafile)!r} (DRIFTLINE_KAFKA__SSL_CAFILE): {exc}"
        ) from None
    ctx.check_hostname = kafka.ssl_check_hostname
    ctx.verify_mode = ssl.CERT_REQUIRED
    if kafka.ssl_certfile:
        try:
            ctx.load_cert_chain(
                str(kafka.ssl_certfile), str(kafka.ssl_keyfile) if kafka.ssl_keyfile else None
            )
        except (OSError, ssl.SSLError) as exc:
            raise KafkaTLSError(
                f"kafka: cannot load the client certificate {str(kafka.ssl_certfile)!r} / key "
                f"{str(kafka.ssl_keyfile) if kafka.ssl_keyfile else '(in the certificate file)'!r} "
                f"(DRIFTLINE_KAFKA__SSL_CERTFILE / DRIFTLINE_KAFKA__SSL_KEYFILE): {exc}"
            ) from None
    elif kafka.ssl_keyfile:
        raise KafkaTLSError(
            "kafka: DRIFTLINE_KAFKA__SSL_KEYFILE is set without DRIFTLINE_KAFKA__SSL_CERTFILE"
        )
    return ctx


def kafka_security_kwargs(settings: Settings | KafkaSettings | None = None) -> dict[str, Any]:
    """aiokafka keyword arguments for the configured security protocol (empty-ish for PLAINTEXT).

    Accepted by ``AIOKafkaProducer``, ``AIOKafkaConsumer``, ``AIOKafkaAdminClient`` and
    ``AIOKafkaClient`` alike; ``SSL``/``SASL_SSL`` add the ``ssl_context`` of ``kafka_ssl_context``.
    """
    kafka = _kafka_settings(settings)
    kwargs: dict[str, Any] = {"security_protocol": kafka.security_protocol}
    if kafka.security_protocol.startswith("SASL"):
        if not kafka.sasl_username or kafka.sasl_password is None:
            raise KafkaAuthError(
                f"kafka: security protocol {kafka.security_protocol} needs DRIFTLINE_KAFKA__SASL_USERNAME "
                "and DRIFTLINE_KAFKA__SASL_PASSWORD"
            )
        kwargs.update(
            sasl_mechanism=kafka.sasl_mechanism,
            sasl_plain_username=kafka.sasl_username,
            sasl_plain_password=kafka.sasl_password.get_secret_value(),
        )
    ctx = kafka_ssl_context(kafka)
    if ctx is not None:
        kwargs["ssl_context"] = ctx
    return kwargs


def kafka_client_kwargs(
    settings: Settings | KafkaSettings | None = None, *, bootstrap: str | None = None, **options: Any
) -> dict[str, Any]:
    """``bootstrap_servers`` plus security kwargs plus ``options``, for any aiokafka client."""
    kafka = _kafka_settings(settings)
    return {"bootstrap_servers": bootstrap or kafka.bootstrap, **kafka_security_kwargs(kafka), **options}


#: What every driftline producer sends with: a write counts once all in-sync replicas have it
#: (``min.insync.replicas`` of the topic), and retries after a lost broker never duplicate a record.
PRODUCER_DURABILITY: dict[str, Any] = {"acks": "all", "enable_idempotence": True}


def kafka_producer_kwargs(
    settings: Settings | KafkaSettings | None = None, *, bootstrap: str | None = None, **options: Any
) -> dict[str, Any]:
    """``kafka_client_kwargs`` plus ``acks=all`` and idempotence, for ``AIOKafkaProducer``."""
    return kafka_client_kwargs(settings, bootstrap=bootstrap, **{**PRODUCER_DURABILITY, **options})


def kafka_producer(
    settings: Settings | KafkaSettings | None = None, *, bootstrap: str | None = None, **options: Any
) -> AIOKafkaProducer:
    """An (unstarted) ``AIOKafkaProducer`` with the configured security, ``acks=all`` and idempotence."""
    from aiokafka import AIOKafkaProducer

    return AIOKafkaProducer(**kafka_producer_kwargs(settings, bootstrap=bootstrap, **options))


def kafka_consumer(
    *topics: str,
    settings: Settings | KafkaSettings | None = None,
    bootstrap: str | None = None,
    **options: Any,
) -> AIOKafkaConsumer:
    """An (unstarted) ``AIOKafkaConsumer`` of ``topics`` with the configured security."""
    from aiokafka import AIOKafkaConsumer

    return AIOKafkaConsumer(*topics, **kafka_client_kwargs(settings, bootstrap=bootstrap, **options))


def faust_broker_credentials(settings: Settings | KafkaSettings | None = None) -> Any:
    """Faust ``broker_credentials`` for the configured protocol, or None for PLAINTEXT.

    ``SASL_SSL`` is ``faust.SASLCredentials`` *with* the ``ssl_context`` (without one, Faust quietly
    falls back to SASL_PLAINTEXT), ``SSL`` is ``faust.SSLCredentials``.
    """
    kafka = _kafka_settings(settings)
    if kafka.security_protocol == "PLAINTEXT":
        return None
    import faust

    kw = kafka_security_kwargs(kafka)
    if kafka.security_protocol == "SSL":
        return faust.SSLCredentials(kw["ssl_context"])
    creds = faust.SASLCredentials(
        username=kw["sasl_plain_username"],
        password=kw["sasl_plain_password"],
        mechanism=kw["sasl_mechanism"],
        ssl_context=kw.get("ssl_context"),
    )
    if creds.protocol.value != kafka.security_protocol:
        raise KafkaAuthError(
            f"kafka: Faust would connect with {creds.protocol.value}, not the configured "
            f"{kafka.security_protocol} (DRIFTLINE_KAFKA__SECURITY_PROTOCOL)"
        )
    return creds


def is_kafka_auth_error(exc: BaseException) -> bool:
    """True if an aiokafka error means the SASL handshake or credentials were rejected."""
    name = type(exc).__name__
    text = str(exc).lower()
    return "Authentication" in name or "sasl" in text or "authentication" in text


def _ssl_cause(exc: BaseException) -> ssl.SSLError | None:
    """The TLS error behind ``exc`` (aiokafka wraps it), or None."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def explain_kafka_tls_error(
    exc: BaseException, settings: Settings | KafkaSettings | None = None
) -> str | None:
    """A one-line reason naming the setting to check when ``exc`` is a TLS failure, else None."""
    kafka = _kafka_settings(settings)
    cause = _ssl_cause(exc)
    if cause is None:
        return None
    where = f"kafka {kafka.bootstrap.split(',')[0].strip()}"
    if isinstance(cause, ssl.SSLCertVerificationError):
        detail = cause.verify_message or str(cause)
        if "hostname" in detail.lower() or "ip address mismatch" in detail.lower():
            return (
                f"{where}: the broker's TLS certificate does not match the host name ({detail}); "
                "connect by a name in its certificate or check DRIFTLINE_KAFKA__SSL_CHECK_HOSTNAME"
            )
        ca = str(kafka.ssl_cafile) if kafka.ssl_cafile else "the system CAs"
        return (
            f"{where}: the broker's TLS certificate was not verified against {ca} ({detail}); "
            "check DRIFTLINE_KAFKA__SSL_CAFILE"
        )
    if "wrong_version_number" in str(cause).lower() or "record layer" in str(cause).lower():
        return (
            f"{where}: TLS handshake failed ({cause.reason or cause}); the listener does not speak TLS - "
            "check DRIFTLINE_KAFKA__SECURITY_PROTOCOL"
        )
    return (
        f"{where}: TLS handshake failed ({cause.reason or cause}); check DRIFTLINE_KAFKA__SSL_CAFILE, "
        "DRIFTLINE_KAFKA__SSL_CERTFILE and DRIFTLINE_KAFKA__SSL_KEYFILE"
    )


async def check_kafka(settings: Settings | KafkaSettings | None = None, *, timeout_s: float = 10.0) -> None:
    """Open one connection to the first bootstrap broker with the configured security settings.

    aiokafka clients report a rejected SASL login or TLS handshake only as "Unable to bootstrap"
    (the cause goes to the log), so callers that want a clear error call this first: it raises
    ``KafkaTLSError`` naming the TLS setting to check, ``KafkaAuthError`` naming the user, mechanism
    and env vars (never the password), or the connection error as is.
    """
    import asyncio

    from aiokafka.conn import create_conn

    kafka = _kafka_settings(settings)
    host, _, port = kafka.bootstrap.split(",")[0].strip().rpartition(":")
    kw = kafka_security_kwargs(kafka)
    try:
        conn = await asyncio.wait_for(
            create_conn(host, int(port), request_timeout_ms=int(timeout_s * 1000), **kw), timeout_s
        )
    except Exception as exc:
        tls = explain_kafka_tls_error(exc, kafka)
        if tls:
            raise KafkaTLSError(tls) from None
        if kafka.security_protocol.startswith("SASL") and is_kafka_auth_error(exc):
            raise KafkaAuthError(
                f"kafka {host}:{port}: SASL {kafka.sasl_mechanism} authentication failed for user "
                f"{kafka.sasl_username!r} "
                "(check DRIFTLINE_KAFKA__SASL_USERNAME / DRIFTLINE_KAFKA__SASL_PASSWORD)"
            ) from None
        raise
    conn.close()


def _triton_settings(settings: Settings | TritonSettings | None) -> TritonSettings:
    if settings is None:
        return get_settings().triton
    return settings.triton if isinstance(settings, Settings) else settings


def triton_url(settings: Settings | TritonSettings | None = None, *, host: str | None = None) -> str:
    """The configured Triton gRPC address ``host:port`` (``host`` overrides the configured host)."""
    triton = _triton_settings(settings)
    return f"{host}:{triton.grpc_port}" if host else triton.grpc_url


@overload
def triton_client(
    settings: Settings | TritonSettings | None = None,
    /,
    *,
    url: str | None = None,
    host: str | None = None,
    aio: Literal[False] = False,
    **options: Any,
) -> tritonclient.grpc.InferenceServerClient: ...


@overload
def triton_client(
    settings: Settings | TritonSettings | None = None,
    /,
    *,
    url: str | None = None,
    host: str | None = None,
    aio: Literal[True],
    **options: Any,
) -> tritonclient.grpc.aio.InferenceServerClient: ...


def triton_client(
    settings: Settings | TritonSettings | None = None,
    /,
    *,
    url: str | None = None,
    host: str | None = None,
    aio: bool = False,
    **options: Any,
) -> tritonclient.grpc.InferenceServerClient | tritonclient.grpc.aio.InferenceServerClient:
    """A tritonclient gRPC ``InferenceServerClient`` for the configured (or the given) address.

    ``aio=True`` gives the asyncio client (create it inside the event loop that will use it: its
    channel belongs to that loop); ``url`` replaces the configured address, ``host`` only its host;
    ``options`` go to ``InferenceServerClient`` unchanged (``verbose``, ``ssl`` ...).
    """
    address = url or triton_url(settings, host=host)
    if aio:
        import tritonclient.grpc.aio as grpc_aio

        return grpc_aio.InferenceServerClient(url=address, **options)
    import tritonclient.grpc as grpc

    return grpc.InferenceServerClient(url=address, **options)
