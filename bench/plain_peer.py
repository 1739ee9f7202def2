"""A plain peer of the pipeline: the same classifier "as users write it", for ``bench.pipeline_bench``.

``python -m bench.plain_peer --topic T --version-dir D --table TBL --group G``

What driftline's streaming, micro-batching and engine choice are measured against
(``vs_plain_peer``): one process that reads the input topic, classifies one message at a time with a
transformers ``pipeline("feature-extraction")`` over the version's merged encoder (LoRA folded into
the weights, ``load_classifier``), mean-pools the token vectors and applies the Linear head (the head
was trained on mean pooling; one text has no padding, so the plain mean is the masked one), and inserts
one ClickHouse row per event with clickhouse-driver. It reads the text the worker reads (news: title,
blank line, body; chat: the message) and normalizes it as the model was trained, so the comparison is
about the serving path, not the maths.

The rows go to a table of its own (``--table``, created here, dropped by the benchmark afterwards),
never to ``labels``. It prints ``ready`` once its model is loaded and its consumer has started, so
the benchmark counts classification time, not start-up time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import time
from collections.abc import Callable
from pathlib import Path

TABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,100}$")


def table_ddl(table: str) -> str:
    """The peer's own table: one row per classified event (valid on ClickHouse 18.16)."""
    if not TABLE_NAME.match(table):
        raise ValueError(f"not a plain table name: {table!r}")
    return (
        f"CREATE TABLE IF NOT EXISTS {table} (event_id String, label String, confidence Float32, "
        "processed_ts_ms UInt64) ENGINE = MergeTree ORDER BY event_id"
    )


def event_text(doc: dict) -> str:
    """The text the worker classifies: a chat message, or a news article's title and body."""
    if "text" in doc:
        return str(doc["text"])
    title, body = str(doc.get("title") or ""), str(doc.get("body") or "")
    return f"{title}\n\n{body}" if title else body


def classifier(version_dir: Path) -> Callable[[str], tuple[str, float]]:
    """``text -> (label, confidence)`` with a transformers pipeline over the merged encoder and the head."""
    import torch
    from transformers import pipeline

    from driftline.models.classifier import load_classifier

    clf = load_classifier(version_dir)
    extract = pipeline(
        "feature-extraction",
        model=clf.encoder,
        tokenizer=clf.tokenizer,
        tokenize_kwargs={"truncation": True, "max_length": clf.max_length},
    )

    def classify(text: str) -> tuple[str, float]:
        with torch.inference_mode():
            tokens = extract(clf.prepare([text])[0], return_tensors=True)  # [1, tokens, hidden]
            probs = torch.softmax(clf.head(tokens.mean(dim=1).float()), dim=-1)[0]
        best = int(probs.argmax())
        return clf.labels[best], float(probs[best])

    return classify


async def serve(topic: str, version_dir: Path, table: str, group: str) -> None:
    """Consume ``topic`` for ever: classify each message and insert its row."""
    from aiokafka import AIOKafkaConsumer
    from clickhouse_driver import Client

    from driftline.clients import kafka_client_kwargs
    from driftline.settings import get_settings

    settings = get_settings()
    classify = classifier(version_dir)
    ch = settings.clickhouse
    password = ch.password.get_secret_value()
    client = Client(host=ch.host, port=ch.port, database=ch.database, user=ch.user, password=password)
    client.execute(table_ddl(table))
    consumer = AIOKafkaConsumer(
        topic, **kafka_client_kwargs(settings, group_id=group, auto_offset_reset="earliest")
    )
    await consumer.start()
    print("ready", flush=True)
    try:
        async for message in consumer:
            doc = json.loads(message.value)
            label, confidence = classify(event_text(doc))
            client.execute(
                f"INSERT INTO {table} (event_id, label, confidence, processed_ts_ms) VALUES",
                [(str(doc["id"]), label, confidence, int(time.time() * 1000))],
            )
    finally:
        await consumer.stop()
        client.disconnect()


def main(argv: list[str] | None = None) -> None:
    """Command line entry point (runs until killed)."""
    parser = argparse.ArgumentParser(prog="python -m bench.plain_peer", description=__doc__.split("\n")[0])
    parser.add_argument("--topic", required=True)
    parser.add_argument("--version-dir", type=Path, required=True)
    parser.add_argument("--table", required=True)
    parser.add_argument("--group", required=True)
    args = parser.parse_args(argv)
    table_ddl(args.table)  # refuse a bad name before loading anything
    asyncio.run(serve(args.topic, args.version_dir, args.table, args.group))


if __name__ == "__main__":
    main()
