"""The emerging-class scenario's stream: only unseen splits, one shift (seconds)."""

from __future__ import annotations

from bench.online_bench import NEW_CLASS, STREAM_SPLITS, ScenarioConfig, build_stream, stream_pool
from driftline.online.update.data import dedupe_latest, hash_split


def test_stream_uses_only_unseen_splits_and_shifts_once() -> None:
    from driftline.models.cache import training_data
    from driftline.models.datasets import Example
    from driftline.models.tasks import get_task

    train, _ = training_data(get_task("news_topic"), exclude=[NEW_CLASS])
    train_ids = {e.id for e in train}
    cfg = ScenarioConfig(pre_events=200, post_events=400, entertainment_share=0.4, seed=3)
    stream = build_stream(cfg, stream_pool(train_ids))
    assert len(stream) == 600
    assert {e.split for e in stream} <= set(STREAM_SPLITS)
    assert not {e.id for e in stream} & train_ids
    assert NEW_CLASS not in {e.label for e in stream[:200]}
    share = sum(e.label == NEW_CLASS for e in stream[200:]) / 400
    assert 0.3 < share < 0.5
    # Repeated feedback on one text counts once, newest label wins, and never straddles the holdout.
    a, b = stream[0], stream[1]
    relabelled = Example(a.id, a.text, "politics" if a.label != "politics" else "sport")
    deduped = dedupe_latest([a, b, relabelled])
    assert [e.id for e in deduped] == [b.id, a.id] and deduped[-1].label == relabelled.label
    train_part, holdout = hash_split(stream, 0.2)
    assert not {e.id for e in train_part} & {e.id for e in holdout}
