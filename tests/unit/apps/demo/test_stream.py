"""The demo's event stream (apps/demo/stream.py): phases, ground truth and exclusions, and the chat share."""

from __future__ import annotations

from pathlib import Path

import pytest

from driftline.apps.demo.options import NEW_CLASS, DemoConfig
from driftline.apps.demo.stream import StreamBuilder


@pytest.mark.parametrize("new_class", [NEW_CLASS, "sport"])
def test_stream_phases_truth_and_exclusions(tmp_path: Path, new_class: str) -> None:
    from driftline.models.datasets import load_dataset

    config = DemoConfig.preset(
        quick=True, run_dir=tmp_path, feedback_fraction=0.5, labeler="random", new_class=new_class
    )
    news = load_dataset("bbc_news").examples
    seen = {e.id for e in news[:200]}
    builder = StreamBuilder(config, "r1", seen, set())
    pre = [builder.next_news("pre") for _ in range(100)]
    post = [builder.next_news("post") for _ in range(200)]
    assert all(e.label != new_class for e, _ in pre)
    share = sum(e.label == new_class for e, _ in post) / len(post)
    assert 0.25 < share < 0.55  # configured 0.4
    by_id = {e.id: e for e in news}
    for event, payload in pre + post:
        assert event.text_id not in seen
        example = by_id[event.text_id]
        assert example.label == event.label
        if example.label != new_class:
            assert example.split != "test"  # kept for the updater's original-test check
        assert payload["id"] == event.event_id and event.event_id.startswith("demo-r1-news-")
        assert (payload["title"] + ". " + payload["body"]).strip() == example.text or payload[
            "body"
        ] == example.text
    assert [e.index for e, _ in pre + post] == list(range(300))
    assert 0.35 < sum(e.feedback for e, _ in pre + post) / 300 < 0.65
    chat, payload = builder.next_chat("pre")
    assert chat.task == "chat_sentiment" and payload["text"] and payload["language"] == "zh"

    # the active labeler gets the same stream, and no event is labelled before a worker asks
    active = StreamBuilder(config.model_copy(update={"labeler": "active"}), "r1", seen, set())
    again = [active.next_news("pre") for _ in range(100)] + [active.next_news("post") for _ in range(200)]
    assert [e.text_id for e, _ in again] == [e.text_id for e, _ in pre + post]
    assert not any(e.feedback for e, _ in again)


def test_chat_share_follows_config(tmp_path: Path) -> None:
    builder = StreamBuilder(DemoConfig.preset(quick=False, run_dir=tmp_path), "r", set(), set())
    assert sum(builder.chat_due() for _ in range(100)) == 50  # chat_per_news 0.5
