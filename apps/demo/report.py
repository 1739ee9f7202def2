"""The demo's report: headline numbers, PNG plots and report.md, all measured from the run.

``analyse`` is pure (unit-tested on synthetic rows); ``write_report`` renders it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from driftline.apps.demo.options import CHAT_TASK, NEW_CLASS, NEWS_TASK
from driftline.apps.demo.store import DriftRow, LabelRow, VersionRow
from driftline.apps.demo.stream import DemoEvent


@dataclass
class Graded:
    """One published event the pipeline labelled: its truth, prediction and the model version used."""

    index: int
    event_id: str
    phase: str
    truth: str
    predicted: str
    version: str
    feedback: bool
    processed_ts_ms: int

    @property
    def correct(self) -> bool:
        """True if the prediction matches the ground truth."""
        return self.truth == self.predicted


@dataclass
class Headline:
    """The run's headline numbers (accuracies are fractions, delays in events, latencies in ms)."""

    events_published: dict[str, int] = field(default_factory=dict)
    events_labelled: dict[str, int] = field(default_factory=dict)
    new_class: str = NEW_CLASS
    labeler: str = ""  # active | random
    open_taxonomy: bool = False  # new_class was not declared: learned through new_labels: accept
    feedback_sent: int = 0
    feedback_joined_by_pipeline: int = 0
    labels_to_promotion: int | None = None  # news labels sent for events published before it served
    labels_shift_to_promotion: int | None = None  # ... of them, for events from the shift on
    # news labels sent from the shift until the update that promoted started: what the promotion
    # took (the rest arrived while it trained, exported and swapped)
    labels_to_decision: int | None = None
    initial_version: str = ""
    pre_shift_accuracy: float | None = None
    drop_accuracy: float | None = None
    drop_events: int = 0
    detection_delay_events: int | None = None
    first_detector: str = ""
    false_alarms_before_shift: int = 0
    drift_detections: int = 0
    promoted_version: str = ""
    decision: str = ""
    decision_reason: str = ""
    decision_fit: str = ""  # what the decided candidate trained: "head" (refit) or "lora"
    promotion_delay_events: int | None = None  # shifted events labelled before the new version served
    recovered_accuracy: float | None = None
    recovered_events: int = 0
    recovery_ratio: float | None = None
    new_class_accuracy_before: float | None = None
    new_class_accuracy_after: float | None = None
    chat_accuracy: float | None = None
    throughput_eps: dict[str, float] = field(default_factory=dict)
    latency_ms: dict[str, dict[str, float]] = field(default_factory=dict)
    end_to_end_ms: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The headline as a JSON-ready dict (``headline.json``)."""
        return asdict(self)


def _metrics(text: str) -> dict[str, Any]:
    """A registry row's metrics JSON as a dict (empty when it is not an object)."""
    try:
        value = json.loads(text or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _accuracy(rows: Sequence[Graded]) -> float | None:
    return sum(r.correct for r in rows) / len(rows) if rows else None


def _percentiles(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {}
    p50, p90, p99 = np.percentile(np.asarray(values, dtype=float), [50, 90, 99])
    return {"p50": round(float(p50), 1), "p90": round(float(p90), 1), "p99": round(float(p99), 1)}


def grade(events: Sequence[DemoEvent], labels: Sequence[LabelRow], task: str) -> list[Graded]:
    """One row per published event of ``task`` that the pipeline labelled, in stream order."""
    by_id = {row.event_id: row for row in labels if row.task == task}
    graded = []
    for event in events:
        row = by_id.get(event.event_id)
        if event.task != task or row is None:
            continue
        graded.append(
            Graded(
                event.index,
                event.event_id,
                event.phase,
                event.label,
                row.label,
                row.model_version,
                event.feedback,
                row.processed_ts_ms,
            )
        )
    return sorted(graded, key=lambda g: g.index)


def decision_of(
    versions: Sequence[VersionRow], initial_version: str, task: str = NEWS_TASK
) -> VersionRow | None:
    """The updater's first decision on ``task`` in this run: a promoted (serving) or rejected row."""
    decided = [
        v
        for v in versions
        if v.task == task and v.version != initial_version and v.status in ("serving", "rejected", "retired")
    ]
    promoted = [v for v in decided if v.promoted]
    return min(promoted or decided, key=lambda v: v.created_ts_ms) if (promoted or decided) else None


def analyse(
    events: Sequence[DemoEvent],
    labels: Sequence[LabelRow],
    drift: Sequence[DriftRow],
    versions: Sequence[VersionRow],
    *,
    initial_version: str,
    feedback_joined: int = 0,
    new_class: str = NEW_CLASS,
    labeler: str = "",
    open_taxonomy: bool = False,
    update_starts_ms: Sequence[int] = (),
) -> tuple[Headline, list[Graded]]:
    """Grade the run against the truth and compute the headline; pure, no I/O."""
    h = Headline(
        initial_version=initial_version,
        feedback_joined_by_pipeline=feedback_joined,
        new_class=new_class,
        labeler=labeler,
        open_taxonomy=open_taxonomy,
    )
    for task in (NEWS_TASK, CHAT_TASK):
        h.events_published[task] = sum(e.task == task for e in events)
        h.events_labelled[task] = len({r.event_id for r in labels if r.task == task})
    h.feedback_sent = sum(e.feedback for e in events)
    news = grade(events, labels, NEWS_TASK)

    pre = [g for g in news if g.phase == "pre"]
    shifted = [g for g in news if g.phase != "pre"]
    h.pre_shift_accuracy = _accuracy(pre)
    drop = [g for g in shifted if g.version == initial_version]
    h.drop_accuracy, h.drop_events = _accuracy(drop), len(drop)

    news_drift = sorted((d for d in drift if d.task == NEWS_TASK), key=lambda d: d.detected_ts_ms)
    h.drift_detections = len(news_drift)
    shift_ts = min((g.processed_ts_ms for g in shifted), default=None)
    if shift_ts is not None:
        h.false_alarms_before_shift = sum(d.detected_ts_ms < shift_ts for d in news_drift)
        after = [d for d in news_drift if d.detected_ts_ms >= shift_ts]
        if after:
            first = after[0]
            h.first_detector = first.detector
            h.detection_delay_events = sum(g.processed_ts_ms <= first.detected_ts_ms for g in shifted)
    else:
        h.false_alarms_before_shift = len(news_drift)

    decision = decision_of(versions, initial_version)
    if decision is not None:
        h.decision = "promoted" if decision.promoted else "rejected"
        h.decision_reason = decision.reason
        h.decision_fit = str(_metrics(decision.metrics).get("fit") or "")
        h.promoted_version = decision.version if h.decision == "promoted" else ""
        started = [t for t in update_starts_ms if t <= decision.created_ts_ms]
        if h.promoted_version and started:
            h.labels_to_decision = sum(
                1
                for e in events
                if e.task == NEWS_TASK and e.phase != "pre" and 0 < e.feedback_ts_ms <= max(started)
            )
    if h.promoted_version:
        recovered = [g for g in shifted if g.version == h.promoted_version]
        h.recovered_accuracy, h.recovered_events = _accuracy(recovered), len(recovered)
        first_new = next((i for i, g in enumerate(shifted) if g.version == h.promoted_version), None)
        h.promotion_delay_events = first_new
        h.new_class_accuracy_after = _accuracy([g for g in recovered if g.truth == new_class])
        served_from = min(g.index for g in recovered) if recovered else None
        if served_from is not None:
            h.labels_to_promotion = sum(
                e.feedback for e in events if e.task == NEWS_TASK and e.index < served_from
            )
            h.labels_shift_to_promotion = sum(
                e.feedback
                for e in events
                if e.task == NEWS_TASK and e.phase != "pre" and e.index < served_from
            )
    if h.recovered_accuracy is not None and h.pre_shift_accuracy:
        h.recovery_ratio = h.recovered_accuracy / h.pre_shift_accuracy
    h.new_class_accuracy_before = _accuracy([g for g in drop if g.truth == new_class])
    h.chat_accuracy = _accuracy(grade(events, labels, CHAT_TASK))

    for task in (NEWS_TASK, CHAT_TASK):
        rows = [r for r in labels if r.task == task]
        if len(rows) >= 2:
            span_s = (max(r.processed_ts_ms for r in rows) - min(r.processed_ts_ms for r in rows)) / 1000
            h.throughput_eps[task] = round(len(rows) / span_s, 2) if span_s > 0 else 0.0
        h.latency_ms[task] = _percentiles([r.latency_ms for r in rows])
        h.end_to_end_ms[task] = _percentiles([max(0, r.processed_ts_ms - r.event_ts_ms) for r in rows])
    return h, news


def rolling(values: Sequence[bool], window: int) -> np.ndarray:
    """Mean of the last ``window`` values at each position (fewer at the start)."""
    arr = np.asarray(values, dtype=float)
    if arr.size == 0:
        return arr
    csum = np.cumsum(np.insert(arr, 0, 0.0))
    idx = np.arange(1, arr.size + 1)
    lo = np.maximum(0, idx - window)
    return (csum[idx] - csum[lo]) / (idx - lo)


# -- rendering ------------------------------------------------------------------------------------


def _fmt(value: float | None, pct: bool = True) -> str:
    if value is None:
        return "n/a"
    return f"{value:.1%}" if pct else f"{value:.2f}"


def plot_accuracy(
    news: Sequence[Graded], h: Headline, drift: Sequence[DriftRow], out: Path, window: int
) -> None:
    """Write the rolling news accuracy plot (with shift, drift and promotion marks) to ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4.5))
    if news:
        xs = [g.index for g in news]
        ax.plot(
            xs,
            rolling([g.correct for g in news], window),
            color="0.75",
            lw=1,
            label=f"all events (ground truth), last {window}",
        )
        graded = [g for g in news if g.feedback]
        versions = sorted({g.version for g in graded}, key=lambda v: int(v) if v.isdigit() else 0)
        acc = rolling([g.correct for g in graded], window)
        colours = plt.get_cmap("tab10")
        for n, version in enumerate(versions):
            pts = [(g.index, a) for g, a in zip(graded, acc, strict=True) if g.version == version]
            ax.plot(
                *zip(*pts, strict=True),
                ".-",
                ms=3,
                lw=1.5,
                color=colours(n),
                label=f"version {version} (feedback-graded, last {window})",
            )
        shift = next((g.index for g in news if g.phase != "pre"), None)
        if shift is not None:
            ax.axvline(shift, color="k", ls=":", lw=1)
            ax.text(shift, 1.02, f" shift: {h.new_class} arrives", fontsize=8, va="bottom")
        shifted = [g for g in news if g.phase != "pre"]
        news_drift = [d for d in drift if d.task == NEWS_TASK]
        for k, d in enumerate(news_drift):
            seen = [g.index for g in news if g.processed_ts_ms <= d.detected_ts_ms]
            if seen:
                ax.axvline(
                    max(seen), color="tab:red", ls="--", lw=1, label="drift detected" if k == 0 else None
                )
        if h.promoted_version:
            first = next((g.index for g in shifted if g.version == h.promoted_version), None)
            if first is not None:
                ax.axvline(
                    first, color="tab:green", ls="-", lw=1.5, label=f"version {h.promoted_version} serving"
                )
    ax.set_ylim(0, 1.08)
    ax.set_xlabel("news event (stream order)")
    ax.set_ylabel("rolling accuracy")
    ax.set_title("news_topic accuracy per model version")
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def plot_throughput(labels: Sequence[LabelRow], out: Path, bucket_s: float = 5.0) -> None:
    """Write labelled events per second over time, per task, to ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 3.5))
    if labels:
        start = min(r.processed_ts_ms for r in labels)
        for task in (NEWS_TASK, CHAT_TASK):
            rows = [r for r in labels if r.task == task]
            if not rows:
                continue
            counts: dict[int, int] = {}
            for r in rows:
                k = int((r.processed_ts_ms - start) / 1000 / bucket_s)
                counts[k] = counts.get(k, 0) + 1
            ks = range(max(counts) + 1)
            ax.plot([k * bucket_s for k in ks], [counts.get(k, 0) / bucket_s for k in ks], label=task)
    ax.set_xlabel("seconds since the first label")
    ax.set_ylabel("labelled events / s")
    ax.set_title(f"throughput ({bucket_s:.0f} s buckets)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def plot_latency(labels: Sequence[LabelRow], out: Path, bucket_s: float = 15.0) -> None:
    """Write inference and end-to-end latency percentiles over time, per task, to ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), sharex=True)
    if labels:
        start = min(r.processed_ts_ms for r in labels)
        for ax, (title, value) in zip(
            axes,
            (
                ("inference latency (Triton call)", lambda r: r.latency_ms),
                ("end-to-end (event time to label)", lambda r: max(0, r.processed_ts_ms - r.event_ts_ms)),
            ),
            strict=True,
        ):
            for task, style in ((NEWS_TASK, "-"), (CHAT_TASK, "--")):
                rows = [r for r in labels if r.task == task]
                if not rows:
                    continue
                groups: dict[int, list[float]] = {}
                for r in rows:
                    groups.setdefault(int((r.processed_ts_ms - start) / 1000 / bucket_s), []).append(value(r))
                ks = sorted(groups)
                for q, colour in ((50, "tab:blue"), (90, "tab:orange"), (99, "tab:red")):
                    ax.plot(
                        [k * bucket_s for k in ks],
                        [np.percentile(groups[k], q) for k in ks],
                        style,
                        color=colour,
                        label=f"{task} p{q}",
                    )
            ax.set_title(title, fontsize=10)
            ax.set_xlabel("seconds since the first label")
            ax.set_ylabel("ms")
            ax.set_yscale("log")
        axes[0].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def render_markdown(h: Headline, context: dict[str, Any]) -> str:
    """The text of report.md for headline ``h`` and the run's ``context``."""
    delay = (
        "not detected"
        if h.detection_delay_events is None
        else f"{h.detection_delay_events} events ({h.first_detector})"
    )
    decision = (h.decision or "none") + (f" version {h.promoted_version}" if h.promoted_version else "")
    decision += f" ({'head refit' if h.decision_fit == 'head' else h.decision_fit})" if h.decision_fit else ""
    promotion = "n/a" if h.promotion_delay_events is None else str(h.promotion_delay_events)
    new_class = f"{_fmt(h.new_class_accuracy_before)} -> {_fmt(h.new_class_accuracy_after)}"
    rows = [
        ("pre-shift accuracy (initial version)", _fmt(h.pre_shift_accuracy)),
        (
            f"accuracy at the drop (shifted, version {h.initial_version}, n={h.drop_events})",
            _fmt(h.drop_accuracy),
        ),
        ("detection delay (shifted events labelled before the first drift detection)", delay),
        ("false alarms before the shift", str(h.false_alarms_before_shift)),
        ("updater decision", decision),
        ("shifted events labelled before the new version served", promotion),
        (f"recovered accuracy (shifted, new version, n={h.recovered_events})", _fmt(h.recovered_accuracy)),
        ("recovery ratio (recovered / pre-shift)", _fmt(h.recovery_ratio, pct=False)),
        (f"{h.new_class} accuracy before -> after", new_class),
        ("labels sent before the promoted version served", str(h.labels_to_promotion)),
        ("... of them from the shift on", str(h.labels_shift_to_promotion)),
        ("labels from the shift until the promoting update started", str(h.labels_to_decision)),
        ("chat_sentiment accuracy (whole run)", _fmt(h.chat_accuracy)),
    ]
    lines = [
        f"# driftline demo report: run {context.get('run_id', '')}",
        "",
        f"{context.get('started', '')}; {context.get('duration_s', 0):.0f} s; "
        f"{'quick' if context.get('quick') else 'default'} run. Every number below is measured from this "
        "run: predictions and model versions from ClickHouse `labels`, drift from `drift_events`, "
        "decisions from `model_versions`, truth from the replayed datasets (`events.jsonl`).",
        "",
        f"## Headline (news_topic, emerging class: {h.new_class}"
        + (" (undeclared, open taxonomy)" if h.open_taxonomy else "")
        + f", {h.labeler} labelling)",
        "",
        "| measure | value |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in rows],
        "",
        f"Decision: {h.decision_reason or 'no decision recorded'}",
        "",
        "![accuracy](accuracy.png)",
        "",
        "## Traffic",
        "",
        "| task | published | labelled | labels/s | inference p50/p90/p99 ms | end-to-end p50/p90/p99 ms |",
        "|---|---|---|---|---|---|",
    ]
    for task in (NEWS_TASK, CHAT_TASK):
        lat, e2e = h.latency_ms.get(task, {}), h.end_to_end_ms.get(task, {})
        lines.append(
            f"| {task} | {h.events_published.get(task, 0)} | {h.events_labelled.get(task, 0)} | "
            f"{h.throughput_eps.get(task, 'n/a')} | "
            f"{'/'.join(str(lat.get(k, '-')) for k in ('p50', 'p90', 'p99'))} | "
            f"{'/'.join(str(e2e.get(k, '-')) for k in ('p50', 'p90', 'p99'))} |"
        )
    lines += [
        "",
        f"Feedback: {h.feedback_sent} labels sent; {h.feedback_joined_by_pipeline} joined by the pipeline "
        "(`feedback` table).",
        "",
        "![throughput](throughput.png)",
        "",
        "![latency](latency.png)",
        "",
        "## Run",
        "",
    ]
    for key, value in context.get("details", {}).items():
        lines.append(f"- {key}: {value}")
    missing = context.get("missing") or []
    if missing:
        lines += ["", "## Missing", "", *[f"- {m}" for m in missing]]
    lines += [
        "",
        "Files: `events.jsonl` (truth), `headline.json`, `config.json`, `online.yaml`, `logs/`.",
        "",
    ]
    return "\n".join(lines)


def write_report(
    run_dir: Path,
    events: Sequence[DemoEvent],
    labels: Sequence[LabelRow],
    drift: Sequence[DriftRow],
    versions: Sequence[VersionRow],
    *,
    initial_version: str,
    feedback_joined: int,
    window: int,
    context: dict[str, Any],
    new_class: str = NEW_CLASS,
    labeler: str = "",
    open_taxonomy: bool = False,
    update_starts_ms: Sequence[int] = (),
) -> Headline:
    """Analyse the run and write the plots, headline.json and report.md into ``run_dir``."""
    h, news = analyse(
        events,
        labels,
        drift,
        versions,
        initial_version=initial_version,
        feedback_joined=feedback_joined,
        new_class=new_class,
        labeler=labeler,
        open_taxonomy=open_taxonomy,
        update_starts_ms=update_starts_ms,
    )
    plot_accuracy(news, h, drift, run_dir / "accuracy.png", window)
    plot_throughput(labels, run_dir / "throughput.png")
    plot_latency(labels, run_dir / "latency.png")
    (run_dir / "headline.json").write_text(json.dumps(h.to_dict(), indent=2), encoding="utf-8")
    (run_dir / "report.md").write_text(render_markdown(h, context), encoding="utf-8")
    return h
