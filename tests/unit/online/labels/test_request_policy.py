"""The label-request policy: budget, random share with its probability, uncertainty, diversity, surplus."""

from __future__ import annotations

import random
import statistics

import pytest

from driftline.online.config import LabelRequestConfig
from driftline.online.labels.request_policy import LabelCandidate, LabelRequester, simhash, uncertainty

LABELS = ("business", "sport", "tech", "politics")


def stream(n: int, seed: int = 0, prefix: str = "e") -> list[LabelCandidate]:
    """``n`` events with distinct texts and random (Dirichlet-like) probabilities over four labels."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        raw = [rng.random() ** 3 for _ in LABELS]
        total = sum(raw)
        words = " ".join(f"w{rng.randrange(100_000)}" for _ in range(12))
        out.append(
            LabelCandidate(f"{prefix}{i}", words, dict(zip(LABELS, (r / total for r in raw), strict=True)))
        )
    return out


def run(requester: LabelRequester, events: list[LabelCandidate], step: int, drift: bool = False) -> list:
    picks = []
    for start in range(0, len(events), step):
        picks += requester.select(events[start : start + step], drift_active=drift)
    return picks


@pytest.mark.parametrize("step", [1, 7, 64])
def test_requests_follow_the_budget_whatever_the_step_size(step: int) -> None:
    config = LabelRequestConfig(budget_fraction=0.05, random_share=0.2)
    picks = run(LabelRequester("news_topic", config), stream(8000), step)
    assert 0.04 <= len(picks) / 8000 <= 0.06
    assert len({p.event_id for p in picks}) == len(picks)


def test_an_active_drift_buys_more_of_the_events_that_stand_out_not_worse_ones() -> None:
    """A drift triples the budget; the bar stays the steady stream's, so the extra labels go to the
    events the change made unsure (a class the model cannot name), not to what serving knows."""
    config = LabelRequestConfig(budget_fraction=0.05, drift_boost=3.0, random_share=0.0)
    calm, shifted = sure_stream(3000, seed=1), sure_stream(3000, seed=2, prefix="s", unsure=0.3)
    requester = LabelRequester("news_topic", config)
    before = run(requester, calm, 8)
    during = run(requester, shifted, 8, drift=True)
    assert 2.5 <= (len(during) / len(shifted)) / (len(before) / len(calm)) <= 3.5
    assert sum(p.uncertainty > 0.3 for p in during) / len(during) >= 0.9
    # the same boost on a stream that did not change: it cannot be spent on sure events
    steady = LabelRequester("news_topic", config)
    run(steady, calm, 8)
    boosted = run(steady, sure_stream(3000, seed=3, prefix="t"), 8, drift=True)
    assert sum(p.uncertainty > 0.3 for p in boosted) / len(boosted) >= 0.9


def test_the_random_share_records_its_probability_and_ignores_the_model() -> None:
    config = LabelRequestConfig(budget_fraction=0.1, random_share=0.3)
    events = stream(10_000)
    picks = run(LabelRequester("news_topic", config), events, 64)
    chance = [p for p in picks if p.reason == "random"]
    assert all(p.sampling_probability == pytest.approx(0.03) for p in chance)
    assert all(p.sampling_probability is None for p in picks if p.reason == "uncertain")
    assert 0.025 <= len(chance) / len(events) <= 0.035
    everyone = statistics.fmean(uncertainty(e.probabilities) for e in events)
    assert statistics.fmean(p.uncertainty for p in chance) == pytest.approx(everyone, abs=0.05)
    # deterministic: a replay of the same events picks the same random share
    again = run(LabelRequester("news_topic", config), events, 64)
    assert {p.event_id for p in again if p.reason == "random"} == {p.event_id for p in chance}


def test_uncertain_picks_are_the_unsure_ones() -> None:
    events = stream(5000)
    picks = run(LabelRequester("news_topic", LabelRequestConfig(budget_fraction=0.05)), events, 64)
    scores = sorted(uncertainty(e.probabilities) for e in events)
    top_quartile = scores[int(0.75 * len(scores))]
    active = [p.uncertainty for p in picks if p.reason == "uncertain"]
    assert active and statistics.fmean(active) > top_quartile


def test_entropy_and_margin_agree_on_the_extremes() -> None:
    sure, unsure = {"a": 0.98, "b": 0.01, "c": 0.01}, {"a": 0.34, "b": 0.33, "c": 0.33}
    for kind in ("margin", "entropy"):
        assert uncertainty(sure, kind) < 0.2 < 0.9 < uncertainty(unsure, kind)


def test_picks_spread_over_predicted_labels() -> None:
    """One label's events are all slightly more uncertain: without spread every pick would be theirs."""
    events = []
    for i in range(64):
        label = LABELS[i % 4]
        top = 0.40 if label == "tech" else 0.46
        probs = {name: (top if name == label else (1 - top) / 3) for name in LABELS}
        events.append(LabelCandidate(f"s{i}", f"text number {i} about {label} w{i * 7919}", probs))
    config = LabelRequestConfig(budget_fraction=8 / 64, random_share=0.0, label_spread=0.15)
    picks = LabelRequester("news_topic", config).select(events)
    chosen = {e.event_id: e.label for e in events}
    labels = [chosen[p.event_id] for p in picks]
    assert len(picks) == 8 and len(set(labels)) >= 3
    greedy = LabelRequester("news_topic", config.model_copy(update={"label_spread": 0.0})).select(events)
    assert {chosen[p.event_id] for p in greedy} == {"tech"}


def test_near_duplicate_texts_are_requested_once() -> None:
    base = "Markets fell sharply today as investors weighed the new tariff plan against strong earnings"
    unsure = {"business": 0.3, "politics": 0.3, "tech": 0.2, "sport": 0.2}
    events = [LabelCandidate(f"d{i}", base + ("!" * (i % 3)), unsure) for i in range(20)]
    events += stream(44, seed=3, prefix="o")
    config = LabelRequestConfig(budget_fraction=10 / 64, random_share=0.0)
    picks = LabelRequester("news_topic", config).select(events)
    assert sum(p.event_id.startswith("d") for p in picks) == 1
    assert len(picks) == 10


def test_simhash_is_close_for_near_copies_and_far_for_other_texts() -> None:
    a = simhash("the quick brown fox jumps over the lazy dog near the river bank")
    b = simhash("the quick brown fox jumps over the lazy dog near the river banks")
    c = simhash("parliament votes on the budget after a long debate about taxes")
    assert (a ^ b).bit_count() < (a ^ c).bit_count()
    assert simhash("今天天气很好我们去公园") != simhash("这部电影太难看了浪费时间")


def test_a_disabled_or_zero_budget_requests_nothing() -> None:
    assert run(LabelRequester("t", LabelRequestConfig(enabled=False)), stream(500), 64) == []
    assert run(LabelRequester("t", LabelRequestConfig(budget_fraction=0.0)), stream(500), 64) == []


def sure_stream(n: int, seed: int, prefix: str = "e", unsure: float = 0.1) -> list[LabelCandidate]:
    """A well-trained model's stream: mostly sure (top probability 0.9 .. 0.999), ``unsure`` of it not."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        label = rng.choice(LABELS)
        top = rng.uniform(0.4, 0.6) if rng.random() < unsure else rng.uniform(0.9, 0.999)
        probs = {name: (top if name == label else (1 - top) / 3) for name in LABELS}
        out.append(
            LabelCandidate(
                f"{prefix}{i}", f"story {i} w{rng.randrange(10**6)} w{rng.randrange(10**6)}", probs
            )
        )
    return out


@pytest.mark.parametrize("step", [1, 3])
def test_tiny_micro_batches_still_ask_about_the_unsure_events(step: int) -> None:
    """The least sure of three confident predictions is not worth a label: the stream decides."""
    events = sure_stream(4000, seed=4)
    config = LabelRequestConfig(budget_fraction=0.05, random_share=0.0)
    picks = run(LabelRequester("news_topic", config), events, step)
    assert 0.035 <= len(picks) / len(events) <= 0.06
    unsure = [p for p in picks if p.uncertainty > 0.3]
    assert len(unsure) / len(picks) >= 0.9, (len(unsure), len(picks))
