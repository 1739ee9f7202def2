"""The Kafka service of the local stack: the KRaft cluster ids it formats storage with."""

from __future__ import annotations


def test_kafka_cluster_ids_never_look_like_flags():
    from driftline.compose.stack.kafka import _new_cluster_id

    ids = {_new_cluster_id() for _ in range(2000)}
    assert len(ids) == 2000
    assert all(len(i) == 22 and not i.startswith("-") for i in ids)
