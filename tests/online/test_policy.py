"""Promotion policy, update trigger and holdout split: pure decisions of the updater."""

from __future__ import annotations

from driftline.models.datasets import Example, text_id
from driftline.online.config import PromotionConfig, UpdaterConfig
from driftline.online.gates.promotion import Paired, Scores, Verdict, decide, no_room, too_few, wins_to_show
from driftline.online.update.data import hash_split, update_split
from driftline.online.update.trigger import UpdateTrigger
from driftline.schema.records import DriftEvent

POLICY = PromotionConfig(margin=0.02, tolerance=0.01, min_holdout=20, max_holdout=100, confidence=0.95)


def test_paired_counts_and_exact_mcnemar_p_values() -> None:
    paired = Paired.of([True, True, False, True, False], [False, True, True, True, False])
    assert (paired.n, paired.candidate_only, paired.serving_only) == (5, 1, 1)
    assert Paired(10, 5, 0).p_better() == 1 / 32  # five wins, no losses: 0.5**5
    assert Paired(10, 0, 5).p_worse() == 1 / 32
    assert Paired(10, 0, 0).p_better() == 1.0  # they never disagree: no evidence at all
    assert Paired(40, 6, 2).p_better() > 0.05  # 6 against 2 is not yet more than luck


def test_gate_promotes_only_on_a_significant_paired_gain_without_forgetting() -> None:
    ok = decide(POLICY, Scores(0.90, 0.95), Scores(0.70, 0.955), Paired(50, 11, 1), 300)
    assert ok.verdict is Verdict.PROMOTE and ok.promote and ok.metrics["p_better"] < 0.05
    forgot = decide(POLICY, Scores(0.95, 0.90), Scores(0.70, 0.96), Paired(50, 13, 0), 300)
    assert forgot.verdict is Verdict.REJECT and "original test set" in forgot.reason
    worse = decide(POLICY, Scores(0.60, 0.96), Scores(0.80, 0.96), Paired(50, 0, 10), 300)
    assert worse.verdict is Verdict.REJECT and "significantly worse" in worse.reason


def test_gate_waits_for_evidence_instead_of_rejecting() -> None:
    # the run that motivated it: serving 1.000 vs candidate 0.909 on a holdout of 11 texts
    tiny = decide(POLICY, Scores(0.909, 0.95), Scores(1.0, 0.95), Paired(11, 0, 1), 300)
    assert tiny.wait and not tiny.promote and "waiting" in tiny.reason
    unsure = decide(POLICY, Scores(0.80, 0.95), Scores(0.70, 0.95), Paired(40, 6, 2), 300)
    assert unsure.wait and "not shown" in unsure.reason
    # the same unconvincing gain on a full holdout: the evidence is in, and it says no
    full = decide(POLICY, Scores(0.80, 0.95), Scores(0.75, 0.95), Paired(100, 9, 4), 300)
    assert full.verdict is Verdict.REJECT and "full holdout" in full.reason
    # significant but below the margin: waits while the holdout grows, rejected once it is full
    small = decide(POLICY, Scores(0.71, 0.95), Scores(0.70, 0.95), Paired(60, 8, 0), 300)
    assert small.wait
    assert decide(POLICY.model_copy(update={"max_holdout": 50}), Scores(0.71, 0.95), Scores(0.70, 0.95),
                  Paired(100, 8, 0), 300).verdict is Verdict.REJECT  # fmt: skip
    assert too_few(POLICY, 3).wait and "only 3 held-out" in too_few(POLICY, 3).reason


def test_a_wait_projects_the_labels_the_evidence_still_needs() -> None:
    from driftline.online.update.sources import ListSource
    from driftline.online.update.updater import Updater

    # 4 of 10 texts won, none lost: p = 0.0625; two more texts like these make it 5-0 (p = 0.031)
    assert Paired(10, 4, 0).more_to_show(0.05) == 2
    assert Paired(22, 2, 0).more_to_show(0.05) > Paired(10, 4, 0).more_to_show(0.05)
    assert Paired(10, 2, 3).more_to_show(0.05) is None  # behind: no amount of the same shows a gain
    assert Paired(10, 0, 0).more_to_show(0.05) is None
    wait = decide(POLICY, Scores(1.0, 0.95), Scores(0.6, 0.95), Paired(20, 4, 0), 300)
    assert wait.wait and wait.metrics["more_holdout_to_show"] == 3  # 1 in 5 texts disagree

    updater = Updater(
        "news_topic", source=ListSource(), config=UpdaterConfig(holdout_fraction=0.3, wait_labels=20)
    )
    assert updater.labels_to_retry(wait) == 10  # 3 held-out texts at 30 % of the new labels
    far = decide(POLICY, Scores(0.75, 0.95), Scores(0.70, 0.95), Paired(40, 3, 1), 300)
    assert far.wait and updater.labels_to_retry(far) == 20  # capped at wait_labels
    behind = decide(POLICY, Scores(0.70, 0.95), Scores(0.72, 0.95), Paired(40, 2, 3), 300)
    assert behind.wait and updater.labels_to_retry(behind) == 20


def test_no_candidate_is_trained_while_serving_got_too_few_held_out_texts_wrong() -> None:
    """A candidate wins only where serving is wrong: below ``wins_to_show`` such texts it cannot pass."""
    assert wins_to_show(0.05) == 5  # 0.5**5 = 0.031; four straight wins are p = 0.0625
    assert wins_to_show(0.01) == 7
    for wins in range(1, 12):  # the bound is exact: that many wins and no loss is what the gate needs
        shown = decide(POLICY, Scores(1.0, 0.95), Scores(0.5, 0.95), Paired(40, wins, 0), 300)
        assert (shown.verdict is Verdict.PROMOTE) == (wins >= wins_to_show(0.05))
    short = no_room(POLICY, [True] * 9 + [False] * 3)  # 3 of 12 wrong: 2 more needed, 1 in 4 texts
    assert short is not None and short.wait and "3 of 12" in short.reason
    assert short.metrics["more_holdout_to_show"] == 8
    assert no_room(POLICY, [False] * 5 + [True] * 20) is None  # room for a significant gain
    blind = no_room(POLICY, [True] * 10)
    assert blind is not None and blind.metrics["more_holdout_to_show"] is None  # no rate to project from
    updater_cfg = UpdaterConfig(holdout_fraction=0.5, wait_labels=20)
    from driftline.online.update.sources import ListSource
    from driftline.online.update.updater import Updater

    updater = Updater("news_topic", source=ListSource(), config=updater_cfg)
    assert updater.labels_to_retry(short) == 16 and updater.labels_to_retry(blind) == 20


def _drift() -> DriftEvent:
    return DriftEvent(
        detector="error_rate",
        task="t",
        statistic=0.3,
        window=50,
        model_version="1",
        adapter_hash="h",
        event_count=10,
        signal="error_rate",
    )


def test_trigger_needs_labels_after_drift_and_respects_cooldown() -> None:
    now = [0.0]
    trigger = UpdateTrigger(
        UpdaterConfig(min_new_labels=10, labels_after_drift=0, retrain_every_labels=100, cooldown_s=60),
        clock=lambda: now[0],
    )
    trigger.on_drift(_drift())
    trigger.on_feedback(9)
    assert trigger.reason() is None
    trigger.on_feedback()
    assert "drift" in (trigger.reason() or "")
    trigger.mark_updated()
    trigger.on_drift(_drift())  # within cooldown: ignored
    trigger.on_feedback(150)
    assert trigger.reason() is None
    now[0] = 61
    assert "150 new feedback labels" in (trigger.reason() or "")


def test_trigger_waits_for_labels_that_came_after_the_drift() -> None:
    trigger = UpdateTrigger(
        UpdaterConfig(min_new_labels=10, labels_after_drift=20, retrain_every_labels=1000)
    )
    trigger.on_feedback(50)  # plenty of labels, all from before the change
    trigger.on_drift(_drift())
    trigger.on_feedback(19)
    assert trigger.reason() is None
    trigger.on_drift(_drift())  # a second detector firing does not restart the count
    trigger.on_feedback()
    assert "drift" in (trigger.reason() or "")


def test_holdout_split_is_stable_and_disjoint() -> None:
    examples = [Example(text_id(f"text {i}"), f"text {i}", "sport") for i in range(1000)]
    train, holdout = hash_split(examples, 0.2)
    assert 150 < len(holdout) < 250 and len(train) + len(holdout) == 1000
    assert hash_split(list(reversed(examples)), 0.2)[1][::-1] == holdout
    assert not {e.id for e in train} & {e.id for e in holdout}


def test_trigger_wait_keeps_the_drift_and_retries_after_more_labels_without_cooldown() -> None:
    now = [0.0]
    trigger = UpdateTrigger(
        UpdaterConfig(min_new_labels=10, labels_after_drift=5, retrain_every_labels=1000, cooldown_s=600),
        clock=lambda: now[0],
    )
    first, later = _drift(), _drift()
    trigger.on_drift(first)
    trigger.on_drift(later)  # a second detector: the change still began at the first detection
    assert trigger.since_ts_ms == first.detected_ts_ms
    trigger.on_feedback(10)
    assert trigger.reason()
    drift, since = trigger.drift, trigger.since_ts_ms
    trigger.mark_updated()
    trigger.wait(drift, since, more=7)  # the gate: too little evidence
    trigger.on_feedback(6)
    assert trigger.reason() is None
    trigger.on_feedback()
    assert "more evidence" in (trigger.reason() or "")  # inside the cooldown, yet due
    assert trigger.since_ts_ms == first.detected_ts_ms and trigger.drift is drift
    trigger.mark_updated()
    assert trigger.reason() is None and trigger.since_ts_ms is None


def test_a_retry_counts_the_labels_the_try_had_not_seen_yet() -> None:
    """Labels reach the store after the trigger counts them: those already counted are not asked twice."""
    trigger = UpdateTrigger(
        UpdaterConfig(min_new_labels=1, labels_after_drift=20, retrain_every_labels=1000, cooldown_s=600)
    )
    trigger.on_drift(_drift())
    trigger.on_feedback(20)
    drift, since = trigger.drift, trigger.since_ts_ms
    assert trigger.reason()
    trigger.mark_updated()
    trigger.on_feedback(1)  # arrived while the try ran
    trigger.wait(drift, since, more=10, seen=12)  # it read 12 of the 20: 8 were still on their way
    assert trigger.reason() is None
    trigger.on_feedback(1)  # 8 + 2 = the 10 it asked for
    assert "more evidence" in (trigger.reason() or "")
    # a try that saw everything counted waits for all it asked for
    trigger.mark_updated()
    trigger.wait(drift, since, more=10, seen=22)
    trigger.on_feedback(9)
    assert trigger.reason() is None
    trigger.on_feedback(1)
    assert trigger.reason()


def test_a_drift_of_a_replaced_version_does_not_start_an_update() -> None:
    """Raised on version 3 before a promotion, delivered after it: version 4 serves, nothing to answer."""
    from driftline.online.update.sources import ListSource
    from driftline.online.update.updater import Updater

    class Repository:  # what TritonSwapper reads from config.pbtxt
        def __init__(self) -> None:
            self.versions: list[int] | None = [4]

        def serving_versions(self, model: str) -> list[int]:
            if self.versions is None:
                raise OSError("config.pbtxt unreadable")
            return self.versions

    repo = Repository()
    updater = Updater("news_topic", source=ListSource(), swapper=repo)
    assert not updater.about_serving("3") and updater.about_serving("4")
    assert updater.about_serving("")  # a version nobody named: kept
    repo.versions = None
    assert updater.about_serving("3")  # bookkeeping that fails never drops a real drift
    assert Updater("news_topic", source=ListSource()).about_serving("3")  # library use: no swapper


def test_holdout_comes_only_from_feedback_after_the_drift() -> None:
    before = [Example(text_id(f"old {i}"), f"old {i}", "sport") for i in range(300)]
    after = [Example(text_id(f"new {i}"), f"new {i}", "tech") for i in range(100)]
    train, holdout = update_split(before + after, after, 0.3)
    assert holdout and {e.id for e in holdout} <= {e.id for e in after}
    assert len(train) + len(holdout) == 400 and not {e.id for e in train} & {e.id for e in holdout}
    assert len(update_split(before + after, None, 0.3)[1]) > len(holdout)  # no drift: from all
