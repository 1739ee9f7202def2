"""Pure logic of the demo: stream phases and truth, headline arithmetic, rendering (no stack)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from driftline.apps.demo.config import NEW_CLASS, NEWS_TASK, DemoConfig
from driftline.apps.demo.events import DemoEvent, StreamBuilder
from driftline.apps.demo.report import analyse, decision_of, render_markdown, rolling, write_report
from driftline.apps.demo.store import DriftRow, LabelRow, VersionRow


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


def test_online_config_turns_label_requests_on_for_the_active_labeler(tmp_path: Path) -> None:
    import yaml

    for labeler, enabled in (("active", True), ("random", False)):
        config = DemoConfig.preset(quick=True, run_dir=tmp_path, labeler=labeler, request_fraction=0.12)
        merged = yaml.safe_load(config.write_online_config().read_text())
        assert merged["defaults"]["label_requests"]["enabled"] is enabled
        assert merged["defaults"]["label_requests"]["budget_fraction"] == 0.12


def test_the_shadow_phase_is_off_in_the_demo_unless_asked_for(tmp_path: Path) -> None:
    """Production runs the shadow phase (ShadowConfig's default); the default demo does not, and
    ``--shadow`` turns it on with the demo-scale evidence of DEMO_SHADOW."""
    from driftline.apps.demo.config import DEMO_SHADOW
    from driftline.online.config import ShadowConfig, online_config

    assert ShadowConfig().enabled
    for shadow in (False, True):
        run_dir = tmp_path / str(shadow)
        run_dir.mkdir()
        config = DemoConfig.preset(quick=True, run_dir=run_dir, shadow=shadow)
        merged = online_config(NEWS_TASK, config.write_online_config()).shadow
        assert merged.enabled is shadow
        assert (merged.min_labels, merged.min_time_s) == (
            DEMO_SHADOW["min_labels"],
            DEMO_SHADOW["min_time_s"],
        )


def test_chat_share_follows_config(tmp_path: Path) -> None:
    builder = StreamBuilder(DemoConfig.preset(quick=False, run_dir=tmp_path), "r", set(), set())
    assert sum(builder.chat_due() for _ in range(100)) == 50  # chat_per_news 0.5


def test_online_overrides_validate(tmp_path: Path) -> None:
    from driftline.online.config import online_config

    for quick in (False, True):
        run_dir = tmp_path / str(quick)  # online_config caches per path
        run_dir.mkdir()
        config = DemoConfig.preset(quick=quick, run_dir=run_dir)
        path = config.write_online_config()
        merged = online_config(NEWS_TASK, path)
        raw = yaml.safe_load(path.read_text())
        assert merged.updater.max_steps == raw["defaults"]["updater"]["max_steps"]
        assert merged.updater.max_steps == config.online_overrides["defaults"]["updater"]["max_steps"]


def _event(i: int, phase: str, label: str, feedback: bool = True) -> DemoEvent:
    return DemoEvent(f"demo-x-news-{i}", NEWS_TASK, "news", label, phase, f"t{i}", feedback, i, 1000 + i)


def _label(event: DemoEvent, predicted: str, version: str, ts: int) -> LabelRow:
    return LabelRow(
        event.event_id, NEWS_TASK, predicted, 0.9, version, "h", ts - 50, ts, 12.0 + event.index % 5
    )


def _scenario():
    """10 pre events (9 right), 10 shifted on v1 (4 entertainment, all wrong; 6 others right),
    10 shifted on v2 (4 entertainment right, 5 of 6 others right); drift after 3 shifted events."""
    events, labels = [], []
    for i in range(10):
        e = _event(i, "pre", "sport")
        events.append(e)
        labels.append(_label(e, "sport" if i else "tech", "1", 10_000 + i * 100))
    for i in range(10, 20):
        truth = NEW_CLASS if i % 5 < 2 else "politics"
        e = _event(i, "post", truth)
        events.append(e)
        labels.append(_label(e, "business" if truth == NEW_CLASS else "politics", "1", 10_000 + i * 100))
    for i in range(20, 30):
        truth = NEW_CLASS if i % 5 < 2 else "politics"
        e = _event(i, "after", truth)
        events.append(e)
        predicted = truth if i != 22 else "tech"
        labels.append(_label(e, predicted, "2", 10_000 + i * 100))
    drift = [
        DriftRow(
            NEWS_TASK, "error_rate", "error_rate", 10_500, 0.4, "1", 50
        ),  # before the shift: false alarm
        DriftRow(NEWS_TASK, "label_mix", "label_mix", 10_000 + 12 * 100 + 1, 0.3, "1", 80),
    ]
    versions = [
        VersionRow(NEWS_TASK, "1", "serving", "initial", "{}", 9_000, 9_000),
        VersionRow(NEWS_TASK, "2", "serving", "promoted: better", '{"fit": "head"}', 11_900, 11_950),
    ]
    return events, labels, drift, versions


def test_headline_numbers_are_computed_from_rows() -> None:
    events, labels, drift, versions = _scenario()
    h, news = analyse(events, labels, drift, versions, initial_version="1", feedback_joined=7)
    assert len(news) == 30
    assert h.pre_shift_accuracy == 0.9
    assert h.drop_accuracy == 0.6 and h.drop_events == 10
    assert h.detection_delay_events == 3 and h.first_detector == "label_mix"
    assert h.false_alarms_before_shift == 1
    assert h.decision == "promoted" and h.promoted_version == "2" and h.decision_fit == "head"
    assert h.recovered_accuracy == 0.9 and h.recovered_events == 10
    assert h.promotion_delay_events == 10
    assert abs(h.recovery_ratio - 1.0) < 1e-9
    assert h.new_class_accuracy_before == 0.0 and h.new_class_accuracy_after == 1.0
    assert h.latency_ms[NEWS_TASK]["p50"] == 14.0
    assert h.end_to_end_ms[NEWS_TASK]["p99"] == 50.0
    assert h.feedback_joined_by_pipeline == 7
    assert h.labels_to_promotion == 20  # every event before index 20 (v2's first) was labelled
    assert h.labels_shift_to_promotion == 10  # of them, the shifted events 10..19
    events[3].feedback = events[15].feedback = events[25].feedback = False
    assert analyse(events, labels, drift, versions, initial_version="1")[0].labels_to_promotion == 18
    # what the promotion took: labels sent from the shift until the update that promoted started
    for e in events:
        e.feedback_ts_ms = 10_050 + e.index * 100 if e.feedback else 0
    h, _ = analyse(events, labels, drift, versions, initial_version="1", update_starts_ms=[10_300, 11_460])
    assert h.labels_to_decision == 5  # shifted events 10-14, labelled by 11,450 ms
    assert analyse(events, labels, drift, versions, initial_version="1")[0].labels_to_decision is None


def test_rejected_update_has_no_recovery() -> None:
    events, labels, drift, _ = _scenario()
    versions = [VersionRow(NEWS_TASK, "", "rejected", "candidate not better", "{}", 11_900, 11_950)]
    labels = [lab if lab.model_version == "1" else LabelRow(*{**lab.__dict__, "model_version": "1"}.values())
              for lab in labels]  # fmt: skip
    h, _ = analyse(events, labels, drift, versions, initial_version="1")
    assert h.decision == "rejected" and h.promoted_version == "" and h.decision_fit == ""
    assert h.recovered_accuracy is None and h.recovery_ratio is None
    assert h.drop_events == 20


def test_a_rejected_shadow_is_a_rejection_though_it_has_a_version() -> None:
    events, labels, drift, _ = _scenario()
    versions = [VersionRow(NEWS_TASK, "2", "rejected", "shadow: agreement 0.31", "{}", 11_900, 11_950)]
    assert decision_of(versions, "1").status == "rejected"
    labels = [lab if lab.model_version == "1" else LabelRow(*{**lab.__dict__, "model_version": "1"}.values())
              for lab in labels]  # fmt: skip
    h, _ = analyse(events, labels, drift, versions, initial_version="1")
    assert h.decision == "rejected" and h.promoted_version == ""
    shadowing = [VersionRow(NEWS_TASK, "2", "shadow", "passed the gate", "{}", 11_900, 11_950)]
    assert decision_of(shadowing, "1") is None  # still deciding


def test_rolling_accuracy() -> None:
    values = rolling([True, False, True, True], 2)
    assert list(values) == [1.0, 0.5, 0.5, 1.0]
    assert rolling([], 5).size == 0


def test_report_files(tmp_path: Path) -> None:
    events, labels, drift, versions = _scenario()
    h = write_report(
        tmp_path, events, labels, drift, versions, initial_version="1", feedback_joined=0, window=5,
        context={"run_id": "x", "missing": ["something absent"], "details": {"k": "v"}},
    )  # fmt: skip
    for name in ("accuracy.png", "throughput.png", "latency.png", "headline.json", "report.md"):
        assert (tmp_path / name).stat().st_size > 0
    assert (tmp_path / "accuracy.png").read_bytes()[:4] == b"\x89PNG"
    text = (tmp_path / "report.md").read_text()
    assert "90.0%" in text and "3 events (label_mix)" in text and "something absent" in text
    assert render_markdown(h, {}).startswith("# driftline demo report")


def test_open_taxonomy_tasks_file_drops_the_new_class_and_accepts_new_labels(tmp_path) -> None:
    from driftline.apps.demo.config import DemoConfig
    from driftline.models.tasks import load_tasks

    config = DemoConfig.preset(quick=True, run_dir=tmp_path, open_taxonomy=True, new_class="sport")
    tasks = load_tasks(config.write_tasks_file())
    news, package = tasks["news_topic"], load_tasks()["news_topic"]
    assert news.labels == [label for label in package.labels if label != "sport"]
    assert news.new_labels == "accept"
    assert tasks["chat_sentiment"] == load_tasks()["chat_sentiment"]  # nothing else changes
