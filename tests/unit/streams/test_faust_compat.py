"""Faust's patches (streams.faust_compat): resumed flow keeps queued events; unchecked releases refused."""

from __future__ import annotations

import faust

from driftline.streams.checkpoint import CommitGate
from driftline.streams.faust_compat import install

TOPIC = "gate-test-chat"


def test_resuming_active_flow_keeps_events_queued_for_a_stream() -> None:
    # Faust's table recovery resumes flow (which used to clear every stream queue) after seeking to
    # the committed offsets, while the fetcher is already delivering: events fetched after the seek
    # were dropped from the queue with their read offset recorded, so never fetched again
    app = faust.App("flow-test", broker="kafka://127.0.0.1:1", store="memory://")
    install(app, CommitGate([TOPIC]))
    queue = app.FlowControlQueue(maxsize=8, clear_on_resume=True)  # what a stream's channel uses
    app.flow_control.resume()  # the first resume after start-up (flow starts suspended)
    queue.put_nowait("fetched after the seek")
    app.flow_control.resume()  # recovery resumes flow again
    assert queue.qsize() == 1, "a live event was dropped"
    app.flow_control.suspend()  # a rebalance: what is queued is stale and is fetched again
    app.flow_control.resume()
    assert queue.qsize() == 0
    assert app.flow_control.is_active()


def test_faust_compat_refuses_unchecked_faust_releases() -> None:
    import pytest

    from driftline.streams.faust_compat import check_version

    check_version("0.15.3")
    for release in ("0.11.3", "0.16.0", "1.0"):
        with pytest.raises(RuntimeError, match="not supported"):
            check_version(release)
