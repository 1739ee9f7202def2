"""``ExplainerPool``: explanation rows for a batch of predictions, with a few versions' weights kept loaded.

Each prediction is explained with the weights of the version that labelled it, and every request gets
exactly one ``ExplanationRecord`` (with an ``error`` when it failed).
"""

from __future__ import annotations

import logging
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from driftline.schema.records import ExplanationRecord, LabelRequestRecord, PredictionRecord
from driftline.schema.timestamps import now_ms

log = logging.getLogger(__name__)

MODEL_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}$")
VERSION_RE = re.compile(r"^[0-9]{1,12}$")


class VersionUnavailable(LookupError):
    """The version folder is not there, or its name is not a plain model name / version number."""


class ExplainerLike(Protocol):
    """What the pool needs of an explainer (``driftline.models.explain.explainer.Explainer``)."""

    method: str
    adapter_hash: str

    def explain(
        self, texts: Sequence[str], labels: Sequence[str] | None = None
    ) -> list[list[tuple[str, float]]]:
        """Top (word, score) pairs per text, towards each text's label."""
        ...


Loader = Callable[[Path], ExplainerLike]


@dataclass(frozen=True)
class ExplainRequest:
    """One event to explain: its text, the label served, which weights served it, and why."""

    task: str
    event_id: str
    text: str
    label: str
    confidence: float
    model_name: str
    model_version: str
    event_ts_ms: int
    reason: str

    @classmethod
    def from_prediction(cls, record: PredictionRecord | LabelRequestRecord, reason: str) -> ExplainRequest:
        """The request for a predictions-topic or label-requests-topic record."""
        return cls(
            task=record.task,
            event_id=record.event_id,
            text=record.text,
            label=record.label,
            confidence=record.confidence,
            model_name=record.model_name,
            model_version=record.model_version,
            event_ts_ms=record.event_ts_ms,
            reason=reason,
        )

    def record(self, **values: object) -> ExplanationRecord:
        """The ``explanations`` row of this request with ``values`` (explanation or error ...)."""
        return ExplanationRecord(
            task=self.task,
            event_id=self.event_id,
            model_version=self.model_version,
            model_name=self.model_name,
            label=self.label,
            confidence=self.confidence,
            reason=self.reason,
            event_ts_ms=self.event_ts_ms,
            **values,  # type: ignore[arg-type]
        )


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:1000]


def _default_loader(device: str, num_threads: int | None) -> Loader:
    def load(folder: Path) -> ExplainerLike:
        from driftline.models.explain.explainer import Explainer

        return Explainer(folder, device=device, num_threads=num_threads)

    return load


class ExplainerPool:
    """Explainers of the most recently used versions under ``repository``; ``explain`` makes the rows."""

    def __init__(
        self,
        repository: Path,
        *,
        capacity: int = 3,
        device: str = "cpu",
        num_threads: int | None = None,
        loader: Loader | None = None,
    ) -> None:
        self.repository = Path(repository)
        self.capacity = max(1, capacity)
        self._load = loader or _default_loader(device, num_threads)
        self._loaded: OrderedDict[tuple[str, str], ExplainerLike] = OrderedDict()

    def version_dir(self, model_name: str, version: str) -> Path:
        """``<repository>/<model_name>/<version>``; ``VersionUnavailable`` for a name that is no plain
        folder name or a folder that does not exist."""
        if not MODEL_NAME_RE.fullmatch(model_name) or not VERSION_RE.fullmatch(version):
            raise VersionUnavailable(f"not a model name and version number: {model_name!r} / {version!r}")
        folder = self.repository / model_name / version
        if not folder.is_dir():
            raise VersionUnavailable(f"model version folder {folder} does not exist")
        return folder

    def get(self, model_name: str, version: str) -> ExplainerLike:
        """The version's explainer, loaded on first use; the least recently used one beyond capacity goes."""
        key = (model_name, version)
        if key in self._loaded:
            self._loaded.move_to_end(key)
            return self._loaded[key]
        folder = self.version_dir(model_name, version)
        started = time.perf_counter()
        explainer = self._load(folder)
        log.info(
            "explainer loaded",
            extra={
                "model": model_name,
                "version": version,
                "load_s": round(time.perf_counter() - started, 2),
            },
        )
        self._loaded[key] = explainer
        while len(self._loaded) > self.capacity:
            self._loaded.popitem(last=False)
        return explainer

    @property
    def loaded(self) -> list[tuple[str, str]]:
        """(model name, version) of the explainers held, least recently used first."""
        return list(self._loaded)

    def explain(self, requests: Sequence[ExplainRequest]) -> list[ExplanationRecord]:
        """One record per request, in request order (errors as rows, see the module)."""
        groups: dict[tuple[str, str], list[int]] = {}
        for i, request in enumerate(requests):
            groups.setdefault((request.model_name, request.model_version), []).append(i)
        out: list[ExplanationRecord | None] = [None] * len(requests)
        for (model_name, version), indexes in groups.items():
            group = [requests[i] for i in indexes]
            for i, record in zip(indexes, self._explain_group(model_name, version, group), strict=True):
                out[i] = record
        return [record for record in out if record is not None]

    def _explain_group(
        self, model_name: str, version: str, group: list[ExplainRequest]
    ) -> list[ExplanationRecord]:
        try:
            explainer = self.get(model_name, version)
        except Exception as exc:
            error = (
                str(exc) if isinstance(exc, VersionUnavailable) else f"cannot load the version: {_error(exc)}"
            )
            return [r.record(error=error, computed_ts_ms=now_ms()) for r in group]
        started = time.perf_counter()
        try:
            words = explainer.explain([r.text for r in group], [r.label for r in group])
        except Exception as exc:
            log.warning(
                "explaining a batch failed, retrying its texts one by one",
                extra={"model": model_name, "version": version, "texts": len(group), "error": _error(exc)},
            )
            return [self._explain_one(explainer, r) for r in group]
        latency_ms = (time.perf_counter() - started) * 1000 / len(group)
        done = now_ms()
        return [
            r.record(
                explanation=w,
                adapter_hash=explainer.adapter_hash,
                method=explainer.method,
                computed_ts_ms=done,
                latency_ms=latency_ms,
            )
            for r, w in zip(group, words, strict=True)
        ]

    @staticmethod
    def _explain_one(explainer: ExplainerLike, request: ExplainRequest) -> ExplanationRecord:
        started = time.perf_counter()
        common = {"adapter_hash": explainer.adapter_hash, "method": explainer.method}
        try:
            (words,) = explainer.explain([request.text], [request.label])
        except Exception as exc:
            return request.record(error=_error(exc), computed_ts_ms=now_ms(), **common)
        latency_ms = (time.perf_counter() - started) * 1000
        return request.record(explanation=words, computed_ts_ms=now_ms(), latency_ms=latency_ms, **common)
