"""Hostile input among good events, through a real worker on a private stack: nothing lost, no crash.

Each message of the corpus (``tests/stack/reliability/hostile.py``) must end as exactly one of: a label
row in ClickHouse holding the event's text byte for byte, or a dead letter (topic and ClickHouse)
whose reason code is the expected one. Duplicated ids collapse to one final row. The worker stays
up and healthy throughout.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path

import pytest

from bench.reliability_bench import record_run
from driftline.apps.testing.harness import consume_all
from tests.stack.reliability.hostile import HostileCase, build_corpus, good_events, interleave
from tests.stack.reliability.support import (
    PIPELINE_CH_PASSWORD,
    PipelineWorkers,
    create_topics,
    files_containing,
    log_files,
    produce,
    query,
    stored_copies,
    wait_for,
)

pytestmark = pytest.mark.slow


def test_hostile_corpus_is_labelled_or_dead_lettered_and_nothing_is_lost(pipeline_stack) -> None:
    run = PipelineWorkers(pipeline_stack.env, pipeline_stack.routes, pipeline_stack.log_dir)
    settings = run.settings
    topics = run.topics
    asyncio.run(create_topics(settings, topics.all()))
    worker = run.start()
    try:
        run.wait_healthy(worker)
        hostile = build_corpus(run.suffix)
        good = good_events(run.suffix, 15)
        cases = interleave(hostile, good)
        by_kind: dict[str, list[HostileCase]] = {"news": [], "chat": []}
        for case in cases:
            by_kind[case.kind].append(case)
        where: dict[tuple[str, int, int], HostileCase] = {}
        for kind, group in by_kind.items():
            topic = getattr(topics, kind)
            sent = asyncio.run(produce(settings, topic, [(c.key, c.payload) for c in group]))
            where.update(zip(sent, group, strict=True))

        expect_labels = {c.event_id: c for c in cases if c.expect == "label"}  # last case per id wins
        expect_dead = {pos: c for pos, c in where.items() if c.expect == "dead_letter"}

        def labels() -> dict[str, tuple]:
            rows = query(
                settings,
                "SELECT event_id, text, topic, partition, kafka_offset, label FROM labels FINAL "
                "WHERE event_id IN %(ids)s",
                {"ids": tuple(expect_labels)},
            )
            found = {r[0]: r for r in rows}
            return found if len(found) == len(expect_labels) else {}

        def letters() -> dict[tuple[str, int, int], dict]:
            found = {}
            for value in asyncio.run(consume_all(settings, topics.deadletter, idle_s=2)):
                d = json.loads(value)
                found[(d["topic"], d["partition"], d["offset"])] = d
            return found if set(expect_dead) <= set(found) else {}

        label_rows = wait_for(labels, timeout=300, interval=2) or {}
        dead = wait_for(letters, timeout=120, interval=2) or {}

        # -- accounting: every produced message has exactly one outcome --------------------------
        labelled_positions = {(r[2], r[3], r[4]) for r in label_rows.values()}
        lost = []
        for pos, case in where.items():
            if case.expect == "label":
                if case.event_id not in label_rows:
                    lost.append(case.name)
            elif pos not in dead:
                lost.append(case.name)
        wrong_code = {
            expect_dead[pos].name: dead[pos]["code"]
            for pos in expect_dead
            if pos in dead and dead[pos]["code"] not in expect_dead[pos].codes
        }
        good_dead = {
            where[pos].name: d["code"] for pos, d in dead.items() if pos in where and pos not in expect_dead
        }
        text_mismatch = [
            c.name
            for c in expect_labels.values()
            if c.event_id in label_rows and label_rows[c.event_id][1] != c.text
        ]
        # stored copies, not FINAL (which collapses by construction): one row per id after merges,
        # and no more stored rows than times the id was produced (no event processed twice)
        produced_copies = Counter(c.event_id for c in cases if c.expect == "label")
        copies = stored_copies(settings, "event_id IN %(ids)s", {"ids": tuple(expect_labels)})
        dup_rows = [
            (event_id, n, final)
            for event_id, (n, final, _) in copies.items()
            if final != 1 or n > produced_copies[event_id]
        ]

        def stored() -> set | None:
            rows = query(
                settings,
                "SELECT topic, partition, kafka_offset FROM dead_letters WHERE topic IN %(t)s",
                {"t": (topics.news, topics.chat)},
            )
            found = {(t, p, o) for t, p, o in rows}
            return found if set(expect_dead) <= found else None

        stored_dead = wait_for(stored, timeout=60) or set()
        alive = worker.proc.poll() is None and run.health(worker)[0] == 200
        record_run(
            "hostile",
            {
                "bad_inputs_tried": len(hostile),
                "bad_input_classes": sorted({c.name.split("#")[0] for c in hostile}),
                "good_events": len(good),
                "expected_dead_letters": len(expect_dead),
                "dead_lettered": sum(pos in dead for pos in expect_dead),
                "labelled": len(label_rows),
                "lost": lost,
                "wrong_reason_codes": wrong_code,
                "good_events_dead_lettered": good_dead,
                "text_mismatches": text_mismatch,
                "duplicate_final_rows": [r[0] for r in dup_rows],
                "dead_letter_codes": dict(Counter(d["code"] for d in dead.values())),
                "worker_alive_and_healthy": alive,
            },
        )
        assert not lost, f"lost (neither labelled nor dead-lettered): {lost}"
        assert not wrong_code, f"dead-lettered with an unexpected reason: {wrong_code}"
        assert not good_dead, f"valid events were dead-lettered: {good_dead}"
        assert not text_mismatch, f"ClickHouse text differs from the event text: {text_mismatch}"
        assert not dup_rows, f"(id, stored rows, rows after merges) stored twice or unmerged: {dup_rows}"
        for pos, case in expect_dead.items():
            assert dead[pos]["reason"].startswith(dead[pos]["code"]), (case.name, dead[pos]["reason"])
        assert set(expect_dead) <= stored_dead, "every dead letter also reaches ClickHouse"
        # the changed duplicate: the newer content is the final row
        changed = next(c for c in expect_labels.values() if c.name == "dup_changed#2")
        assert label_rows[changed.event_id][1] == changed.text
        assert alive, "worker died or became unhealthy"
        assert labelled_positions  # sanity: rows carry their Kafka position
        # the worker authenticated to ClickHouse with the password, which no log may contain
        logs = log_files(Path(pipeline_stack.env["DRIFTLINE_RUN_DIR"]), pipeline_stack.log_dir)
        assert worker.log in logs and files_containing(PIPELINE_CH_PASSWORD, logs) == []
    finally:
        run.stop()
