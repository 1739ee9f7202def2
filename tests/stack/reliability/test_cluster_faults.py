"""A broker SIGKILLed under pipeline load on the three-broker TLS cluster: every event labelled once.

The module starts its own ``stack up --cluster`` (three KRaft brokers, SASL_SSL, RF 3,
``min.insync.replicas`` 2) on free ports with a temporary run dir (``driftline.apps.testing.cluster``). Two
``driftline worker`` processes run the news route against a model served by the shared Triton and
write to the shared ClickHouse; their Kafka is the cluster, reached through the client factory
(TLS + SCRAM). A producer sends news events with ``acks=all`` at a steady rate while one broker is
killed with SIGKILL and restarted. Afterwards every acknowledged id has a label row, each id keeps
exactly one row after merges (``stored_copies``, not ``labels FINAL``), copies agree on the label,
and the workers, brokers and recovery time are recorded (``bench/results/reliability_runs``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.reliability_bench import record_run
from driftline.apps.testing.cluster import Cluster, broker_kill, news_texts, pipeline, start_cluster
from driftline.apps.testing.harness import served_model

pytestmark = [pytest.mark.slow, pytest.mark.stack]

RATE = 6.0  # events/s: steady, below what two workers on a loaded two-core box label
MIN_EVENTS = 80


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with start_cluster(tmp_path_factory.mktemp("cluster") / "run") as running:
        yield running


def test_sigkill_one_broker_under_pipeline_load_loses_nothing(cluster: Cluster, tmp_path: Path) -> None:
    t0 = time.monotonic()
    with served_model("news_topic") as served, pipeline(served, tmp_path, base_env=cluster.env) as run:
        figures = broker_kill(run, cluster, news_texts(int(RATE * 120)), rate=RATE, progress=print)
    figures["test_wall_s"] = round(time.monotonic() - t0 + cluster.up_seconds, 1)
    record_run("cluster_faults", figures)
    print(figures)
    assert figures["events"] >= MIN_EVENTS, figures
    assert figures["lost"] == 0, f"acknowledged events never labelled: {figures}; worker logs {tmp_path}"
    assert figures["duplicates_final"] == 0, f"ids that keep more than one row after merges: {figures}"
    assert figures["conflicting_labels"] == 0, figures
    assert figures["labelled"] == figures["events"], figures
    assert figures["unexpected_ids"] == 0, figures
    assert all(figures["workers_alive_after"]), f"a worker exited during the broker kill: {figures}"
    assert figures["brokers_healthy_after"], figures
