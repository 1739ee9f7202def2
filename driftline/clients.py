"""The one place that turns settings into authenticated ClickHouse and Kafka clients and Triton clients.

Every component that talks to ClickHouse, Kafka or Triton should get its connection from here, so
that turning on a ClickHouse password or Kafka SASL/SCRAM (``DRIFTLINE_CLICKHOUSE__PASSWORD``,
``DRIFTLINE_KAFKA__SECURITY_PROTOCOL=SASL_PLAINTEXT`` ...) reaches all of them at once instead of
silently missing the one call site that built its own client (and a Triton address setting reaches
the serving client, the hot-swapper and the stack smoke test alike). Secrets are read from the
``SecretStr`` settings only at the moment a client is built and never appear in an error message.

Layering: bottom of the import graph (only ``driftline.settings``); the client libraries are imported
lazily so importing settings stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, overload

from driftline.settings import ClickHouseSettings, KafkaSettings, Settings, TritonSettings, get_settings

if TYPE_CHECKING:
    import tritonclient.grpc
    import tritonclient.grpc.aio
    from clickhouse_driver import Client

#: ClickHouse error codes that mean "who you are" was rejected (18.16: 192 unknown user, 193 wrong
#: password, 194 password required; modern servers: 516).
AUTH_ERROR_CODES = frozenset({192, 193, 194, 516})


class ClickHouseAuthError(RuntimeError):
    """ClickHouse refused the configured user or password; says which env vars to check."""


class KafkaAuthError(RuntimeError):
    """The Kafka broker refused the SASL credentials; says which env vars to check."""


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


def kafka_security_kwargs(settings: Settings | KafkaSettings | None = None) -> dict[str, Any]:
    """aiokafka keyword arguments for the configured security protocol (empty-ish for PLAINTEXT).

    Accepted by ``AIOKafkaProducer``, ``AIOKafkaConsumer``, ``AIOKafkaAdminClient`` and
    ``AIOKafkaClient`` alike.
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
    return kwargs


def kafka_client_kwargs(
    settings: Settings | KafkaSettings | None = None, *, bootstrap: str | None = None, **options: Any
) -> dict[str, Any]:
    """``bootstrap_servers`` plus security kwargs plus ``options``, for any aiokafka client."""
    kafka = _kafka_settings(settings)
    return {"bootstrap_servers": bootstrap or kafka.bootstrap, **kafka_security_kwargs(kafka), **options}


def faust_broker_credentials(settings: Settings | KafkaSettings | None = None) -> Any:
    """``faust.SASLCredentials`` for ``faust.App(broker_credentials=...)``, or None for PLAINTEXT."""
    kafka = _kafka_settings(settings)
    if not kafka.security_protocol.startswith("SASL"):
        return None
    import faust

    kw = kafka_security_kwargs(kafka)
    return faust.SASLCredentials(
        username=kw["sasl_plain_username"], password=kw["sasl_plain_password"], mechanism=kw["sasl_mechanism"]
    )


def is_kafka_auth_error(exc: BaseException) -> bool:
    """True if an aiokafka error means the SASL handshake or credentials were rejected."""
    name = type(exc).__name__
    text = str(exc).lower()
    return "Authentication" in name or "sasl" in text or "authentication" in text


async def check_kafka(settings: Settings | KafkaSettings | None = None, *, timeout_s: float = 10.0) -> None:
    """Open one connection to the first bootstrap broker with the configured security settings.

    aiokafka clients report a rejected SASL login only as "Unable to bootstrap" (the cause goes to
    the log), so callers that want a clear error call this first: it raises ``KafkaAuthError``
    naming the user, mechanism and env vars (never the password), or the connection error as is.
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
