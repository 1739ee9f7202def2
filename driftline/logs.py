"""JSON-lines logs for workers: structlog renders every stdlib ``logging`` record as one JSON object.

``JsonFormatter`` goes on a stdlib handler; keys that look like secrets are masked.
"""

from __future__ import annotations

import logging
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, WrappedLogger

SECRET_WORDS = ("password", "secret", "token", "credential", "sasl")
_PLAIN = str | int | float | bool | type(None)


def mask_secrets(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """Replace the value of every key that looks like a secret with ``***``."""
    for key in event_dict:
        if any(word in key.lower() for word in SECRET_WORDS):
            event_dict[key] = "***"
    return event_dict


def _plain_values(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """Non-JSON values (objects passed in ``extra=``) become their ``repr``."""
    return {k: v if isinstance(v, _PLAIN) else repr(v) for k, v in event_dict.items()}


_PRE_CHAIN: list[Any] = [
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.stdlib.ExtraAdder(),
    structlog.processors.TimeStamper(fmt="%Y-%m-%dT%H:%M:%S.%fZ", utc=True, key="ts"),
]


class JsonFormatter(structlog.stdlib.ProcessorFormatter):
    """A stdlib formatter writing one JSON object per record (extra fields included, secrets masked)."""

    def __init__(self) -> None:
        super().__init__(
            foreign_pre_chain=_PRE_CHAIN,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                structlog.processors.EventRenamer("msg"),
                mask_secrets,
                _plain_values,
                structlog.processors.JSONRenderer(ensure_ascii=False),
            ],
        )


def json_handler(stream: TextIO | None = None) -> logging.Handler:
    """A stream handler with ``JsonFormatter``."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    return handler
