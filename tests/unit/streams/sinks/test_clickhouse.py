"""``refusal`` (streams.sinks.clickhouse): which clickhouse-driver errors are refusals for good, and
``PERMANENT_CODES`` carries ClickHouse's own names.
"""

from __future__ import annotations

import json

import pytest
from clickhouse_driver import errors

from driftline.streams.sinks.clickhouse import PERMANENT_CODES, refusal


def _server(code: int, message: str) -> errors.ServerException:
    return errors.ServerException(f"DB::Exception: {message}. Stack trace:\n\n0. frames", code)


@pytest.mark.parametrize(
    ("exc", "permanent"),
    [
        (_server(38, "Cannot parse date: value is too short"), "CANNOT_PARSE_DATE"),
        (_server(252, "Too many partitions for single INSERT block (more than 100)"), "TOO_MANY_PARTS"),
        (_server(252, "Too many parts (300). Merges are processing significantly slower"), None),
        (_server(241, "Memory limit (total) exceeded"), None),
        (_server(60, "Table driftline.labels doesn't exist"), None),  # the query, not the rows
        (_server(16, "No such column nope in table labels"), None),
        (_server(159, "Timeout exceeded"), None),
        (errors.NetworkError("Code: 210. Connection refused"), None),
        (errors.SocketTimeoutError("timed out"), None),
        (ConnectionResetError("reset by peer"), None),
        (EOFError("Unexpected EOF while reading bytes"), None),
        (errors.TypeMismatchError("Column id: argument out of range"), "TypeMismatchError"),
        (ValueError("not raised by the driver's encoder"), None),
    ],
)
def test_refusal_classifies_clickhouse_errors(exc: BaseException, permanent: str | None) -> None:
    refused = refusal(exc)
    assert (refused.error_type if refused else None) == permanent
    if refused is not None and isinstance(exc, errors.ServerException):
        assert (
            refused.reason.startswith(f"{permanent} (code {exc.code}): ")
            and "Stack trace" not in refused.reason
        )


def test_permanent_codes_carry_clickhouse_s_own_names() -> None:
    session = pytest.importorskip("chdb.session")
    sess = session.Session()
    try:
        codes = ", ".join(str(code) for code in PERMANENT_CODES)
        result = str(
            sess.query(f"SELECT c, errorCodeToName(c) FROM (SELECT arrayJoin([{codes}]) AS c)", "JSON")
        )
    finally:
        sess.close()
    names = {row["c"]: row["errorCodeToName(c)"] for row in json.loads(result)["data"]}
    assert names == PERMANENT_CODES
