"""JSON logs (``driftline.logs``): extra fields are kept and secret-looking ones are masked."""

from __future__ import annotations

import json


def test_json_logs_carry_extra_fields_and_mask_secret_looking_ones() -> None:
    import logging

    from driftline.logs import JsonFormatter

    record = logging.makeLogRecord(
        {
            "name": "x",
            "levelname": "INFO",
            "msg": "hello %s",
            "args": ("w",),
            "sink": "labels",
            "password": "hunter2",
        }
    )
    line = json.loads(JsonFormatter().format(record))
    assert line["msg"] == "hello w" and line["sink"] == "labels" and line["password"] == "***"
