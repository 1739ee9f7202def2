"""Records on the local 18.16 server: each record's sample row inserts into its table, and a replayed
explanation replaces the older row of the same version.
"""

from __future__ import annotations

import pytest

from driftline.schema.records import (
    ExplanationRecord,
    insert_sql,
)
from tests.unit.driftline.schema.test_records import SAMPLES


@pytest.mark.stack
def test_explanations_replayed_rows_collapse_to_the_newest(settings) -> None:
    """A replay computed later (even in another month) replaces the row; another version does not."""
    from tests.conftest import migrated_database

    first = next(r for r in SAMPLES if isinstance(r, ExplanationRecord))
    replay = first.model_copy(
        update={"computed_ts_ms": first.computed_ts_ms + 40 * 86_400_000, "explanation": [("goal", 0.75)]}
    )
    other = first.model_copy(update={"model_version": "2"})
    with migrated_database(settings, "explanations_") as client:
        sql = insert_sql(ExplanationRecord.TABLE, ExplanationRecord.COLUMNS)
        for record in (first, replay, other):
            client.execute(sql, [record.to_row()])
        rows = client.execute(
            f"SELECT {', '.join(ExplanationRecord.COLUMNS)} FROM explanations FINAL ORDER BY model_version"
        )
    assert [ExplanationRecord.from_row(row) for row in rows] == [replay, other]


@pytest.mark.stack
def test_record_rows_insert_into_the_server(settings) -> None:
    from tests.conftest import migrated_database

    with migrated_database(settings, "records_") as client:
        for record in SAMPLES:
            client.execute(insert_sql(record.TABLE, record.COLUMNS), [record.to_row()])
            assert client.execute(f"SELECT count() FROM {record.TABLE}") == [(1,)]
