"""The benchmarks' result documents: the keys the README and the integrator read, from made-up measurements.

No model and no stack: ``bench.models_bench.build_result`` and ``bench.pipeline_bench.assemble`` are
pure functions of what the benchmarks measured, and ``bench.timing.run_plan`` is checked with a
fake model call.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from bench.models_bench import EXPLAIN_ROW, build_result, markdown
from bench.pipeline_bench import TASKS, assemble
from bench.pipeline_bench import markdown as pipeline_markdown
from bench.timing import run_plan


def _row(rate: float, accuracy: float | None, agreement: float | None, **extra) -> dict:
    cell = {"sentences_per_s": rate / 2, "p50_ms": 10.0, "p99_ms": 20.0, "calls": 3, "texts": 24}
    return {
        "sentences_per_s": rate, "accuracy": accuracy, "agreement": agreement, "p50_ms": 12.0,
        "p99_ms": 30.0, "calls": 4, "texts": 100, "by_batch": {"1": cell, "32": cell}, **extra,
    }  # fmt: skip


def _models_measured() -> dict:
    # fmt: off
    return {
        "news_topic": {
            "artifact": "/a/news", "artifact_source": "latest trained artifact", "texts": 100,
            "token_budget": 4096, "max_batch": 64, "padding_waste": {"before": 0.41, "after": 0.03},
            "rows": {
                "torch-fp32": _row(50.0, 0.90, 1.0),
                "ort-fp32": _row(60.0, 0.90, 1.0),
                "ort-int8": _row(90.0, 0.897, 0.98),  # within 0.5 points, agrees: the pick
                "ort-fused-int8": _row(120.0, 0.88, 0.99),  # faster but 2 points worse
                "openvino-fp32": _row(110.0, 0.90, 0.96),  # faster but agrees too rarely
                "openvino-int8": {"error": "RuntimeError: cannot compile"},
                EXPLAIN_ROW: _row(500.0, 0.90, 1.0, note="labels are torch-fp32's"),  # not an engine
            },
        },
        "chat_sentiment": {
            "artifact": "/a/chat", "artifact_source": "harness test artifact", "texts": 50,
            "token_budget": 4096, "max_batch": 64, "padding_waste": {"before": 0.5, "after": 0.1},
            "rows": {"torch-fp32": _row(80.0, 0.85, 1.0), "ort-int8": _row(150.0, 0.80, 0.9)},
        },
    }
    # fmt: on


def test_models_result_has_the_contract_keys_and_the_rules_choice() -> None:
    meta = {"started": "now", "mode": "quick", "batches": [1, 32], "budget_s": 0.3, "token_budget": 4096}
    result = build_result(meta, _models_measured())

    json.dumps(result)  # a JSON document, as written
    for task in ("news_topic", "chat_sentiment"):
        for engine, row in result["engines"][task].items():
            for key in ("sentences_per_s", "accuracy", "agreement", "by_batch", "p50_ms", "p99_ms"):
                assert key in row, (task, engine, key)
        assert set(result["padding_waste"][task]) == {"before", "after"}
    assert result["engines"]["news_topic"]["ort-int8"]["by_batch"]["32"]["sentences_per_s"] == 45.0
    assert result["padding_waste"]["news_topic"] == {"before": 0.41, "after": 0.03}
    assert result["engines"]["news_topic"]["openvino-int8"]["error"].startswith("RuntimeError")
    # fastest within 0.5 points of torch with >= 0.97 agreement; errors and the explain row never count
    assert result["chosen"]["news_topic"] == "ort-int8"
    assert result["chosen"]["chat_sentiment"] == "torch-fp32"  # nothing qualifies
    assert result["tasks"]["chat_sentiment"]["artifact_source"] == "harness test artifact"

    text = markdown(result)
    assert "## news_topic" in text and "## chat_sentiment" in text
    assert "ort-int8 *" in text and "**ort-int8**" in text
    assert "41.0%" in text and "3.0%" in text


def test_models_result_without_a_torch_measurement_chooses_nothing() -> None:
    measured = _models_measured()
    measured["news_topic"]["rows"]["torch-fp32"] = {"error": "OSError: no weights"}
    result = build_result({"batches": [1]}, measured)
    assert result["chosen"]["news_topic"] is None
    assert result["chosen"]["chat_sentiment"] == "torch-fp32"


def _run(per_s: float, p99: float | None = 800.0, task: str = "news_topic", **extra) -> dict:
    return {"task": task, "events": 100, "stored": 100, "events_per_s": per_s, "seconds": 100 / per_s,
            "latency_p50_ms": 300.0, "latency_p99_ms": p99, "rate": None, **extra}  # fmt: skip


def test_pipeline_result_has_the_figures_and_their_details() -> None:
    sections = {
        "raw": {"engine": "ort-int8", "texts": 600, "token_budget": 4096, "sentences_per_s": 80.0,
                "calls": 20, "max_batch": 64, "one_batch_ms": 500.0, "one_batch_tokens": 8192,
                "batch1_sentences_per_s": 50.0},
        "batched": _run(76.0),
        "paced": _run(38.0, p99=1200.0, rate=38.0),
        "per_event": _run(4.0, max_batch=1),
        "peer": _run(19.0, how="pipeline"),
        "events": {"explainer": True, "explained_by_end": 12,
                   "tasks": {"news_topic": _run(70.0), "chat_sentiment": _run(150.0, task="chat_sentiment")}},
        "rss_mib": {"kafka": 400.0},
    }  # fmt: skip
    result = assemble({"when": "now", "mode": "quick"}, sections)

    json.dumps(result)
    assert result["p1"] == pytest.approx(76.0 / 80.0, abs=1e-3)
    assert result["p2"] == pytest.approx(19.0)
    assert result["p2_engine_ceiling"] == pytest.approx(80.0 / 50.0)
    assert result["p99_ms_at_half_load"] == 1200.0
    assert result["p99_target_ms"] == 2000.0  # 4 x one max_batch call
    assert result["vs_plain_peer"] == pytest.approx(4.0)
    assert result["events_per_s"] == {"news_topic": 70.0, "chat_sentiment": 150.0}
    assert result["details"]["raw_engine"]["engine"] == "ort-int8"
    assert result["details"]["pipeline_half_load"]["rate"] == 38.0
    text = pipeline_markdown(result)
    assert "0.95" in text and "2000.0" in text and "12 explanations" in text


def test_pipeline_result_of_the_events_section_alone_keeps_every_key() -> None:
    """``--only events`` (e.g. on the old serving checkout): the other figures are null, not missing."""
    events = {"explainer": False, "tasks": {task: _run(10.0, task=task) for task in TASKS}}
    result = assemble({"when": "now"}, {"events": events})
    for key in ("p1", "p2", "p2_engine_ceiling", "p99_ms_at_half_load", "p99_target_ms", "vs_plain_peer"):
        assert result[key] is None
    assert result["events_per_s"] == dict.fromkeys(TASKS, 10.0)
    assert "Explainer service beside the events worker: no" in pipeline_markdown(result)


def test_run_plan_puts_probabilities_back_in_input_order_and_honours_the_time_budget() -> None:
    labels = 3

    def call(batch: list[int]) -> np.ndarray:
        return np.eye(labels, dtype=np.float32)[[i % labels for i in batch]]

    plan = [[4, 1], [0, 3], [2]]
    whole = run_plan(call, plan, 5)
    assert whole.rows == 5 and len(whole.latencies_ms) == 3
    assert whole.probs is not None and list(whole.probs.argmax(axis=1)) == [0, 1, 2, 0, 1]
    assert set(whole.summary()) >= {"sentences_per_s", "p50_ms", "p99_ms", "calls", "texts"}

    cut = run_plan(call, plan, 5, budget_s=0.0, min_calls=2)  # budget spent at once: min_calls only
    assert len(cut.latencies_ms) == 2 and sorted(cut.done) == [0, 1, 3, 4]


def _headline(labels: int, recovery: float | None, decision: str = "promoted") -> dict:
    return {
        "decision": decision, "decision_reason": "why", "labels_to_decision": labels,
        "labels_shift_to_promotion": labels + 10,
        "labels_to_promotion": labels + 30, "promotion_delay_events": 200, "recovery_ratio": recovery,
        "pre_shift_accuracy": 0.95, "drop_accuracy": 0.6, "recovered_accuracy": recovery and 0.95 * recovery,
        "new_class_accuracy_before": 0.0, "new_class_accuracy_after": 0.9, "feedback_sent": 100,
        "detection_delay_events": 40,
    }  # fmt: skip


def test_labels_bench_document_has_the_issue_keys_and_the_ratio() -> None:
    from bench.labels_bench import assemble, row_of

    results = {
        "random": row_of(_headline(80, 0.97)),
        "active": row_of(_headline(30, 0.96)),
        "open_taxonomy": row_of(_headline(40, 0.93)),
    }
    report = json.loads(json.dumps(assemble(results, quick=True, seed=0, budget=0.2)))
    for scenario in ("random", "active"):
        assert report[scenario]["labels_to_promotion"] is not None
        assert report[scenario]["recovery_ratio"] is not None
    assert report["open_taxonomy"]["recovery_ratio"] == 0.93
    assert report["active"]["labels_to_promotion"] == 30  # labels from the shift on
    assert report["active"]["labels_until_served"] == 40
    assert report["active"]["labels_total_to_promotion"] == 60
    assert report["active_label_ratio"] == 0.375
    # no ratio when either side never promoted: labels "to promotion" would mean nothing
    results["random"] = row_of(_headline(120, None, decision="rejected"))
    assert assemble(results, quick=True, seed=0, budget=0.2)["active_label_ratio"] is None


def test_promotion_bench_counts_the_promoted_seeds() -> None:
    from bench.labels_bench import row_of
    from bench.promotion_bench import assemble

    runs = {seed: row_of(_headline(30 + seed, 0.97)) for seed in range(9)}
    runs[9] = row_of(_headline(50, None, decision="rejected"))
    runs[3]["recovery_ratio"] = 0.91
    report = json.loads(json.dumps(assemble(runs)))
    assert report["quick_demo_promotions"] == 9 and report["quick_demo_seeds"] == 10
    assert report["quick_demo_promoted_seeds"] == list(range(9))
    assert report["quick_demo_min_recovery"] == 0.91
    assert report["runs"]["9"]["decision"] == "rejected"
    # a run that failed outright (no headline) is not a promotion
    runs[0] = {"ok": False, "exit_code": 1}
    assert assemble(runs)["quick_demo_promotions"] == 8


def test_promotion_bench_parts_keep_each_others_keys(tmp_path, monkeypatch) -> None:
    """A run of one part (rollback, estimate, rescore, demos) must not erase the others' contract keys."""
    import bench.promotion_bench as pb

    monkeypatch.setattr(pb, "RESULTS", tmp_path)
    pb.save({"rescore_events_per_s_ratio": 0.9, "targets": pb.TARGETS})
    pb.save({"rollback_labels_to_detect": 7})
    pb.save({"estimate_abs_error": 0.03, "quick_demo_promotions": 9})
    saved = json.loads((tmp_path / "promotion_bench.json").read_text())
    assert {k: saved[k] for k in ("rescore_events_per_s_ratio", "rollback_labels_to_detect",
                                  "estimate_abs_error", "quick_demo_promotions")} == {
        "rescore_events_per_s_ratio": 0.9, "rollback_labels_to_detect": 7, "estimate_abs_error": 0.03,
        "quick_demo_promotions": 9,
    }  # fmt: skip
    targets = pb.TARGETS
    for key in ("rescore_events_per_s_ratio_min", "estimate_abs_error_max", "rollback_labels_to_detect_max",
                "quick_demo_promotions_min"):  # fmt: skip
        assert key in targets
