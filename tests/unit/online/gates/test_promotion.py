"""The promotion gate (online.gates.promotion): paired McNemar counts, promotion only on a significant
gain without forgetting, waiting (and the labels still needed) instead of rejecting.
"""

from __future__ import annotations

from driftline.online.config import PromotionConfig, UpdaterConfig
from driftline.online.gates.promotion import Paired, Scores, Verdict, decide, no_room, too_few, wins_to_show

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
