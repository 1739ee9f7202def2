"""Truncation study for ``news_topic``: accuracy and cost of cutting long articles in four ways.

``python -m bench.truncation_bench [--quick] [--engine NAME] [--train] [--artifact DIR] [--passes N]``
writes ``bench/results/truncation_bench.json`` (``--quick``: ``truncation_bench_quick.json``) and prints
a table. Settings, method and keys: docs/benchmarks.md; the study and its choice: docs/truncation.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from driftline.models.artifacts import read_meta
from driftline.models.datasets import Example, load_dataset
from driftline.models.scores import classification_report
from driftline.models.tasks import TaskConfig, get_task
from driftline.models.text.batching import pad, padding_waste, plan_batches
from driftline.models.text.codec import TextCodec, Truncation
from driftline.settings import get_settings

TASK = "news_topic"
TOKEN_BUDGET = 4096
MAX_BATCH = 64  # the Triton model's max_batch_size
THREADS = 2
TIMED_PASSES = 2
QUICK_TEXTS = 48
ACCURACY_SLACK = 0.005  # 0.5 accuracy points
COST_TIE = 0.05  # relative cost differences below this (or the measured pass spread) are timing noise
MAX_COST_TIE = 0.25  # a wider spread is a run too noisy to rank costs: capped and flagged
REFERENCE_ENGINE = "torch-fp32"
CURRENT = "head-128"
TRAINED_AT_256 = "head-256-trained"
RESULTS_FILE = Path(__file__).resolve().parent / "results" / "truncation_bench.json"
QUICK_RESULTS_FILE = RESULTS_FILE.with_name("truncation_bench_quick.json")  # never clobbers the study
RULE = (
    "the cheapest setting whose accuracy is within 0.5 points of the best; cost = 1 / sentences_per_s "
    "(costs within the timing noise tie: the largest spread between a setting's timed passes, "
    "clamped to [5%, 25%]; "
    "a tie goes to the more accurate, then to today's head-128); "
    f"{TRAINED_AT_256!r} (retrained at 256) is reported, not chosen"
)

console = Console()
Runner = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Setting:
    """One way to cut the texts: token limit, truncation strategy and the head's share of the room."""

    name: str
    max_length: int
    truncation: Truncation
    head_share: float = 0.5


SETTINGS: tuple[Setting, ...] = (
    Setting("head-128", 128, "head"),
    Setting("head-256", 256, "head"),
    Setting("head_tail-128", 128, "head_tail", 0.5),
    Setting("head_tail-128-q25", 128, "head_tail", 0.25),
)


def torch_runner(artifact: Path, threads: int) -> Runner:
    """The fp32 reference: the artifact's classifier in torch, LoRA merged, softmax probabilities."""
    import torch

    from driftline.models.classifier import load_classifier

    torch.set_num_threads(threads)
    clf = load_classifier(artifact)

    def run(input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            logits = clf(torch.from_numpy(input_ids), torch.from_numpy(attention_mask))
            return torch.softmax(logits, dim=-1).numpy()

    return run


def engine_runner(engine: str, version_dir: Path, threads: int) -> Runner:
    """``engine`` through ``driftline.models.engines.load_engine`` (torch-fp32 without that module)."""
    if importlib.util.find_spec("driftline.models.engines") is None:
        if engine != REFERENCE_ENGINE:
            raise SystemExit(f"engine {engine!r} needs driftline.models.engines, which is not installed")
        return torch_runner(version_dir, threads)
    from driftline.models.engines import load_engine

    loaded = load_engine(version_dir, engine, threads)
    return lambda input_ids, attention_mask: np.asarray(loaded.run(input_ids, attention_mask))


@dataclass
class Case:
    """One setting under measurement: its codec and runner, and its fastest timed pass so far."""

    setting: Setting
    codec: TextCodec
    run: Runner
    walls: list[float] = field(default_factory=list)
    wall_s: float = float("inf")
    cpu_s: float = float("inf")
    probs: np.ndarray | None = None


def case_for(setting: Setting, task: TaskConfig, run: Runner) -> Case:
    """A case with the serving codec configured for ``setting``."""
    codec = TextCodec.for_encoder(
        task.encoder,
        setting.max_length,
        normalize_input=task.normalize_input,
        truncation=setting.truncation,
        head_share=setting.head_share,
    )
    return Case(setting, codec, run)


def infer(case: Case, texts: Sequence[str]) -> np.ndarray:
    """Encode, plan, pad and infer ``texts`` as serving does; probabilities in input order."""
    encoded = case.codec.encode(texts)
    probs: np.ndarray | None = None
    for batch in plan_batches(encoded.lengths, TOKEN_BUDGET, MAX_BATCH):
        input_ids, mask = pad([encoded.ids[i] for i in batch], case.codec.pad_id)
        out = case.run(input_ids, mask)
        if probs is None:
            probs = np.zeros((len(texts), out.shape[1]), dtype=np.float32)
        probs[batch] = out
    if probs is None:
        raise ValueError("infer() needs at least one text")
    return probs


def time_cases(cases: Sequence[Case], texts: Sequence[str], passes: int = TIMED_PASSES) -> None:
    """Warm every case up, then time ``passes`` rounds over all cases, keeping each one's best.

    Rounds interleave the settings (pass 1 of each, then pass 2 of each), so a burst of load from
    other work on a shared CPU hits one pass of several settings rather than every pass of one.
    """
    for case in cases:
        infer(case, texts[: min(len(texts), 2 * MAX_BATCH)])
    for _ in range(passes):
        for case in cases:
            wall, cpu = time.perf_counter(), time.process_time()
            probs = infer(case, texts)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            case.walls.append(wall)
            if wall < case.wall_s:
                case.wall_s, case.cpu_s, case.probs = wall, cpu, probs


def figures(case: Case, task: TaskConfig, examples: Sequence[Example]) -> dict[str, Any]:
    """The study's figures for a timed case: quality, truncation, tokens, padding and throughput."""
    if case.probs is None:
        raise ValueError(f"{case.setting.name} has not been timed")
    texts = [e.text for e in examples]
    encoded = case.codec.encode(texts)
    lengths = encoded.lengths
    report = classification_report(
        [e.label for e in examples], [task.labels[i] for i in case.probs.argmax(axis=1)], task.labels
    )
    return {
        "accuracy": round(float(report["accuracy"]), 4),
        "macro_f1": round(float(report["macro_f1"]), 4),
        "truncated_share": round(sum(encoded.truncated) / len(texts), 4),
        "mean_tokens": round(float(np.mean(lengths)), 1),
        "padding_waste": round(padding_waste(plan_batches(lengths, TOKEN_BUDGET, MAX_BATCH), lengths), 4),
        "sentences_per_s": round(len(texts) / case.wall_s, 1),
        # process CPU time of the same pass: steadier than wall time when other work shares the CPU
        "cpu_ms_per_text": round(1000.0 * case.cpu_s / len(texts), 1),
        "pass_seconds": [round(wall, 2) for wall in case.walls],
    }


def timing_noise(cases: Sequence[Case]) -> float:
    """The largest relative spread between one case's timed passes (0 with a single pass)."""
    return max((max(c.walls) - min(c.walls)) / min(c.walls) for c in cases if c.walls)


def cost_tie(noise: float) -> tuple[float, str | None]:
    """The tie band for a measured timing noise, and a warning when the run was too noisy to rank."""
    if noise > MAX_COST_TIE:
        warning = (
            f"timing noise {noise:.0%} > {MAX_COST_TIE:.0%}: other work shared the CPU; rerun when it "
            "is quieter or with more --passes"
        )
        return MAX_COST_TIE, warning
    return max(COST_TIE, noise), None


def choose(results: dict[str, dict[str, Any]], tie: float = COST_TIE) -> tuple[str, str]:
    """The setting the rule picks (see docs/truncation.md) and why, in words with the figures.

    ``tie`` is the relative cost difference that counts as equal (the measured timing noise).
    """
    eligible = {name: r for name, r in results.items() if name != TRAINED_AT_256}
    best = max(r["accuracy"] for r in eligible.values())
    near = {name: r for name, r in eligible.items() if r["accuracy"] >= best - ACCURACY_SLACK - 1e-9}
    cheapest = min(1.0 / r["sentences_per_s"] for r in near.values())
    tied = [name for name, r in near.items() if 1.0 / r["sentences_per_s"] <= cheapest * (1 + tie)]
    chosen = max(tied, key=lambda name: (near[name]["accuracy"], name == CURRENT))
    summary = ", ".join(
        f"{name} {r['accuracy']:.1%} at {r['sentences_per_s']:.0f}/s" for name, r in eligible.items()
    )
    reason = (
        f"best accuracy {best:.1%}; within 0.5 points: {', '.join(near)}; cheapest of those "
        f"(costs within {tie:.0%} tie -> accuracy, then today's): {chosen} ({summary})"
    )
    return chosen, reason


def trained_at_256(task: TaskConfig) -> Path:
    """A fresh adapter fine-tuned at 256 with the task's train settings, cached off the served path."""
    from driftline.models.cache import get_or_train

    root = get_settings().cache_dir / "truncation-artifacts" / task.name
    result = get_or_train(task, max_length=256, root=root)
    console.print(f"trained at 256: {result.artifact_dir} (reused: {result.reused})")
    return result.artifact_dir


def render(results: dict[str, dict[str, Any]], chosen: str, title: str) -> Table:
    """The results as a rich table, the chosen setting marked."""
    table = Table(title=title)
    columns = (
        "setting",
        "accuracy",
        "macro-F1",
        "truncated",
        "tokens/text",
        "padding",
        "sent/s",
        "cpu ms",
    )
    for column in columns:
        table.add_column(column, justify="left" if column == "setting" else "right", no_wrap=True)
    for name, r in results.items():
        table.add_row(
            f"{name}{' *' if name == chosen else ''}",
            f"{r['accuracy']:.1%}",
            f"{r['macro_f1']:.3f}",
            f"{r['truncated_share']:.0%}",
            f"{r['mean_tokens']:.0f}",
            f"{r['padding_waste']:.1%}",
            f"{r['sentences_per_s']:.1f}",
            f"{r['cpu_ms_per_text']:.1f}",
        )
    return table


def main(argv: Sequence[str] | None = None) -> dict[str, object]:
    """Measure every setting, print the table, write the JSON and return what it holds."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_TEXTS} test texts only")
    parser.add_argument("--engine", default=REFERENCE_ENGINE, help="driftline.models.engines engine name")
    parser.add_argument("--artifact", type=Path, help="artifact folder (default: the latest news_topic)")
    parser.add_argument("--version-dir", type=Path, help="engine input folder (default: the artifact)")
    parser.add_argument("--train", action="store_true", help="also fine-tune and measure a 256 adapter")
    parser.add_argument("--passes", type=int, default=TIMED_PASSES, help="timed passes (best counts)")
    parser.add_argument("--out", type=Path, help="default: bench/results/truncation_bench[_quick].json")
    args = parser.parse_args(argv)

    from transformers.utils import logging as transformers_logging

    from driftline.models.triton.export import latest_artifact

    # head_tail tokenizes whole articles before cutting them: "longer than 512" is expected, not news
    transformers_logging.set_verbosity_error()

    task = get_task(TASK)
    artifact = args.artifact or latest_artifact(TASK)
    examples = load_dataset(task.dataset).split("test")
    if args.quick:  # every k-th text: the split is ordered by label
        examples = examples[:: max(1, len(examples) // QUICK_TEXTS)][:QUICK_TEXTS]
    run = engine_runner(args.engine, args.version_dir or artifact, THREADS)
    console.print(f"{TASK}: {len(examples)} test texts, artifact {artifact}, engine {args.engine}")

    cases = [case_for(setting, task, run) for setting in SETTINGS]
    if args.train:
        trained = torch_runner(trained_at_256(task), THREADS)
        cases.append(case_for(Setting(TRAINED_AT_256, 256, "head"), task, trained))
    time_cases(cases, [e.text for e in examples], max(1, args.passes))
    results = {case.setting.name: figures(case, task, examples) for case in cases}

    noise = timing_noise(cases)
    tie, warning = cost_tie(noise)
    chosen, reason = choose(results, tie)
    meta = read_meta(artifact)
    payload: dict[str, object] = {
        "task": TASK,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "artifact": str(artifact),
        "adapter_hash": meta.adapter_hash,
        "trained_max_length": meta.max_length,
        "engine": args.engine,
        "threads": THREADS,
        "token_budget": TOKEN_BUDGET,
        "timed_passes": max(1, args.passes),
        "timing_noise": round(noise, 3),
        "cost_tie": round(tie, 3),
        "timing_warning": warning,
        "n_texts": len(examples),
        "quick": args.quick,
        "rule": RULE,
        "settings": results,
        "chosen": chosen,
        "reason": reason,
    }
    console.print(render(results, chosen, f"{TASK} truncation ({len(examples)} texts, {args.engine})"))
    console.print(f"chosen: [bold]{chosen}[/bold] - {reason}")
    if warning:
        console.print(f"[yellow]warning: {warning}[/yellow]")
    out = args.out or (QUICK_RESULTS_FILE if args.quick else RESULTS_FILE)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    console.print(f"wrote {out}")
    return payload


if __name__ == "__main__":
    main()
