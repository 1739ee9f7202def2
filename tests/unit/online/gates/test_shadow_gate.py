"""The shadow phase's decision (online.gates.shadow_gate): promote, wait or reject on the shadow's
evidence, and where the phase is on by default.
"""

from __future__ import annotations

import pytest

from driftline.online.config import ShadowConfig
from driftline.online.gates.promotion import Paired, Verdict
from driftline.online.gates.shadow_gate import ShadowEvidence, judge_shadow

CONFIG = ShadowConfig(enabled=True, min_events=100, min_time_s=60, min_labels=10, max_time_s=600)


def _evidence(elapsed=120.0, mirrored_=150, agreed=140, shadow=None, serving=None) -> ShadowEvidence:
    shadow = [True] * 18 + [False] * 2 if shadow is None else shadow
    serving = [True] * 17 + [False] * 3 if serving is None else serving
    return ShadowEvidence(elapsed, mirrored_, agreed, Paired.of(shadow, serving), sum(shadow), sum(serving))


def test_enough_traffic_and_labels_not_worse_promotes() -> None:
    decision = judge_shadow(_evidence(), CONFIG)
    assert decision.verdict is Verdict.PROMOTE
    assert decision.metrics["shadow_agreement"] == pytest.approx(140 / 150, abs=1e-4)
    assert decision.metrics["shadow_graded"] == 20 and decision.metrics["shadow_accuracy"] == 0.9


def test_it_waits_for_traffic_or_time_and_for_labels_then_gives_up() -> None:
    assert judge_shadow(_evidence(elapsed=10, mirrored_=50), CONFIG).wait  # neither 100 events nor 60 s
    assert not judge_shadow(_evidence(elapsed=61, mirrored_=50), CONFIG).wait  # time is enough
    few = _evidence(shadow=[True] * 5, serving=[True] * 5)
    assert judge_shadow(few, CONFIG).wait  # 5 labels < 10
    late = judge_shadow(_evidence(elapsed=601, shadow=[True] * 5, serving=[True] * 5), CONFIG)
    assert late.verdict is Verdict.REJECT and "too little live evidence" in late.reason


def test_low_agreement_or_worse_live_accuracy_rejects() -> None:
    disagrees = judge_shadow(_evidence(agreed=30), CONFIG)
    assert disagrees.verdict is Verdict.REJECT and "agrees with serving on 20.0%" in disagrees.reason
    worse = judge_shadow(_evidence(shadow=[False] * 10 + [True] * 10, serving=[True] * 20), CONFIG)
    assert worse.verdict is Verdict.REJECT and worse.metrics["shadow_p_worse"] < 0.05
    slightly = judge_shadow(
        _evidence(shadow=[True] * 16 + [False] * 4, serving=[True] * 17 + [False] * 3), CONFIG
    )
    assert slightly.verdict is Verdict.REJECT  # 0.80 vs 0.85: beyond the 0.02 tolerance


def test_the_shadow_phase_is_the_default_where_it_can_be_judged() -> None:
    """On by default; it needs a registry (the shadow's state), a swapper and live evidence (the
    ClickHouse source's ``graded_since``), else the updater promotes straight after the gate."""
    from driftline.online.update.sources import ClickHouseSource, ListSource
    from driftline.online.update.updater import Updater

    live, registry, swapper = ClickHouseSource(client=None), object(), object()
    full = Updater("news_topic", source=live, registry=registry, swapper=swapper)
    assert full.shadow_config.enabled and full.shadowing
    assert not Updater("news_topic", source=ListSource(), registry=registry, swapper=swapper).shadowing
    assert not Updater("news_topic", source=live, swapper=swapper).shadowing
    full.shadow_config = ShadowConfig(enabled=False)
    assert not full.shadowing
