"""The updater: turn drift and fresh feedback into a new version, and promote it only on evidence.

``Updater.build_candidate`` trains (head refit first, then LoRA) and gates a candidate; ``Updater.run_update``
adds registry rows, export and hot swap. Serving changes only in the last step.
"""

from __future__ import annotations

import math
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from driftline.models.datasets import Example
from driftline.models.inference.base import ModelNotReadyError
from driftline.models.tasks import TaskConfig, get_task
from driftline.online.config import UpdaterConfig, online_config
from driftline.online.gates.promotion import (
    Decision,
    Paired,
    Scores,
    decide,
    no_room,
    too_few,
    too_few_recent,
)
from driftline.online.gates.rollback_watch import WatchReading, sprt
from driftline.online.serving.registry import ModelRegistry
from driftline.online.serving.serve import Publish, ServedButNotRecorded, rollback, serve_version
from driftline.online.update.data import original_labels, update_split
from driftline.online.update.scoring import (
    Fit,
    engine_parent,
    holdout_temperature,
    predictions,
    round_metric,
    score,
    serving_scores,
)
from driftline.online.update.sources import ExampleSource
from driftline.schema.records import ModelRecord, ModelStatus


@dataclass
class Candidate:
    """A trained candidate with its evaluation, the policy's decision and what it trained on."""

    artifact: Path
    meta: Any
    decision: Decision
    n_train_recent: int
    n_replay: int
    train_seconds: float
    eval_seconds: float
    trained_ids: frozenset[str] = frozenset()  # recent-feedback text ids the candidate trained on


@dataclass
class UpdateOutcome:
    """What one ``run_update`` did: promoted or not, the version, the reason, the registry row."""

    task: str
    trigger: str
    promoted: bool = False
    waiting: bool = False  # the gate wants more evidence: retry after ``more_labels`` labels
    more_labels: int = 0
    fresh_labels: int | None = None  # labels from after the drift that this update read
    version: int | None = None
    reason: str = ""
    candidate: Candidate | None = None
    record: ModelRecord | None = None


class Updater:
    """Incremental updates for one task."""

    def __init__(
        self,
        task: str,
        *,
        source: ExampleSource,
        registry: ModelRegistry | None = None,
        swapper: Any | None = None,  # online.swap.TritonSwapper (optional: library-level use)
        publish: Publish | None = None,
        config: UpdaterConfig | None = None,
        artifacts_dir: Path | None = None,
        progress: bool = True,
        seed: int = 0,
        original_eval_size: int = 300,
        log: Callable[[str], None] = print,
        model_name: str | None = None,
        label_set: Callable[[], Sequence[str]] | None = None,
        features_dir: Path | None = None,
    ) -> None:
        self.task = task
        self.task_config: TaskConfig = get_task(task)
        full = online_config(task)
        self.config = config or full.updater
        # Triton model name and registry key: versions are numbered per Triton model.
        self.model_name = model_name or self.config.model_name or task
        self.policy = full.promotion
        self.rollback_config = full.rollback
        self.shadow_config = full.shadow
        self._cleared: set[int] = set()  # versions the watch cleared (online.watch)
        self.source = source
        self.registry = registry
        self.swapper = swapper
        self.publish = publish or (lambda alert: None)
        self.artifacts_dir = artifacts_dir
        self.progress = progress
        self.seed = seed
        self.original_eval_size = original_eval_size
        self.log = log
        # the labels a next version may have: declared + accepted (online.task_labels.label_set)
        self.label_set = label_set or (lambda: list(self.task_config.labels))
        from driftline.models.head_refit import FeatureCache  # torch + peft: only once an updater exists

        # replay and test texts, embedded once per encoder (head refits); kept on disk with features_dir
        self.features = FeatureCache(directory=features_dir)
        self._warm_model: tuple[str, Any] | None = None  # (encoder key, classifier) while warming
        self._saved_keys: set[str] = set()  # encoders whose warm features were written (features_dir)

    # -- library level ------------------------------------------------------------------------

    def _original_data(self, labels: set[str], trained_ids: set[str]) -> tuple[list[Example], list[Example]]:
        """Replay sample of the original training split and the original test set.

        Test texts that came back as feedback and are in the candidate's training data are dropped
        from the test set: a model must never be scored on a text it trained on.
        """
        from driftline.models.cache import training_data

        train, test = training_data(self.task_config)
        rng = random.Random(self.seed)
        train = [e for e in train if e.label in labels]
        test = [e for e in test if e.label in labels and e.id not in trained_ids]
        replay = rng.sample(train, min(self.config.replay_size, len(train)))
        test = rng.sample(test, min(self.original_eval_size, len(test)))
        return replay, test

    def warm(self, limit: int | None = None) -> int:
        """Embed the serving encoder's replay and test texts ahead of need; how many remain to embed.

        A drift is answered by a head refit, whose slowest part would otherwise be embedding these
        same texts again. ``limit``: embed at most this many now (the updater process warms in
        small steps between polls, so a drift is never kept waiting by the warm-up). Returns 0 when
        all are cached, the task's drift updates train LoRA, or nothing is serving.
        """
        from driftline.models.classifier import load_classifier
        from driftline.models.head_refit import encoder_key

        if self.config.drift_fit != "head" or self.swapper is None:
            return 0
        try:
            parent, _ = self.serving_artifact()
        except RuntimeError:
            return 0
        key = encoder_key(parent)
        replay, test = self._original_data(original_labels(parent), set())
        missing = self.features.missing(key, [e.text for e in replay + test])
        now = missing[:limit] if limit is not None else missing
        if now:
            if self._warm_model is None or self._warm_model[0] != key:
                self._warm_model = (key, load_classifier(parent))
            self.features.features(self._warm_model[1], key, now)
        if len(now) == len(missing):
            self._warm_model = None  # warm: the model is not needed until the next version
            if key not in self._saved_keys:  # once per encoder: what the next updater starts from
                self.features.save(key)
                self._saved_keys.add(key)
        return len(missing) - len(now)

    def labels_to_retry(self, decision: Decision) -> int:
        """After a wait: the labels the projected evidence needs, at most ``wait_labels``.

        When the candidate is ahead, the gate projects how many more held-out texts would show it
        (``Paired.more_to_show``); before training, how many would hold enough texts serving gets
        wrong (``no_room``). The holdout takes ``holdout_fraction`` of new labels.
        """
        more = decision.metrics.get("more_holdout_to_show")
        if not more:
            return self.config.wait_labels
        return max(1, min(self.config.wait_labels, math.ceil(more / self.config.holdout_fraction)))

    def serving_correct(self, parent: Path, examples: Sequence[Example]) -> list[bool]:
        """Whether the serving version (``parent``) labels each example right: where a candidate can win.

        Scored as a drift's candidate will be (a head refit reads the cached features, which the
        candidate's training then reuses), so the check costs little more than the embedding.
        """
        fit: Fit = "head" if self.config.drift_fit == "head" else "lora"
        scored = serving_scores(fit, parent, [e.text for e in examples], self.features)
        return [p == e.label for p, e in zip(scored.predicted, examples, strict=True)]

    def labels_short(self, n_holdout: int) -> int:
        """About how many more post-drift labels a holdout of ``n_holdout`` needs (0: enough to judge)."""
        missing = self.policy.min_holdout - n_holdout
        return math.ceil(missing / self.config.holdout_fraction) if missing > 0 else 0

    def _grown_task(
        self, parent: Path, train: list[Example], holdout: list[Example]
    ) -> tuple[TaskConfig, list[Example], list[Example]]:
        """The task with the candidate's labels: the parent's, then accepted labels it has examples of.

        Feedback naming a label that is only proposed (not accepted) waits outside training and
        evaluation; an accepted label with no training example yet waits for the next update.
        """
        from driftline.models.artifacts import read_meta

        parent_labels = list(read_meta(parent).labels)
        seen = {e.label for e in train}
        grown = [label for label in self.label_set() if label not in parent_labels and label in seen]
        labels = [*parent_labels, *grown]
        task = self.task_config
        if labels != list(task.labels):
            task = task.model_copy(update={"labels": labels})
        usable = set(labels)
        return task, [e for e in train if e.label in usable], [e for e in holdout if e.label in usable]

    def build_candidate(
        self,
        parent: Path,
        recent: Sequence[Example],
        fresh: Sequence[Example] | None = None,
        fit: Fit = "lora",
    ) -> Candidate:
        """Train from ``parent`` on recent + replay, score both models on the same texts, apply the gate.

        ``fresh``: the feedback that arrived after the drift; the holdout is drawn from it only.
        ``fit``: "lora" trains adapter and head (``models.training``); "head" refits only the head
        on the frozen encoder's features (``models.head_refit``: seconds instead of minutes).
        """
        from driftline.models.artifacts import new_artifact_dir

        recent_train, holdout = update_split(recent, fresh, self.config.holdout_fraction)
        task, recent_train, holdout = self._grown_task(parent, recent_train, holdout)
        replay, original_test = self._original_data(original_labels(parent), {e.id for e in recent_train})
        holdout_ids = {e.id for e in holdout}
        replay = [e for e in replay if e.id not in holdout_ids]
        out_dir = new_artifact_dir(self.task, self.artifacts_dir)
        started = time.perf_counter()
        extra = {"online_update": True, "n_recent": len(recent_train), "n_replay": len(replay)}
        meta = self._fit(fit, task, list(recent_train) + replay, parent, out_dir, extra)
        train_seconds = time.perf_counter() - started
        started = time.perf_counter()
        metric = self.policy.metric
        texts = [e.text for e in holdout] + [e.text for e in original_test]
        scored = predictions(fit, out_dir, parent, texts, self.features)
        truth = [e.label for e in holdout] + [e.label for e in original_test]
        scores, correct, temperatures = {}, {}, {}
        for name, model_scores in scored.items():
            labels = model_scores.predicted
            temperatures[name] = holdout_temperature(model_scores, truth)
            on_holdout, on_original = labels[: len(holdout)], labels[len(holdout) :]
            correct[name] = [p == e.label for p, e in zip(on_holdout, holdout, strict=True)]
            scores[name] = Scores(
                recent=score(metric, [e.label for e in holdout], on_holdout),
                original=score(metric, [e.label for e in original_test], on_original),
            )
        eval_seconds = time.perf_counter() - started
        decision = decide(
            self.policy,
            scores["candidate"],
            scores["serving"],
            Paired.of(correct["candidate"], correct["serving"]),
            len(original_test),
        )
        decision.metrics.update(
            {
                "fit": fit,
                "train_seconds": round(train_seconds, 1),
                "eval_seconds": round(eval_seconds, 1),
                "n_train_recent": len(recent_train),
                "n_replay": len(replay),
                "n_fresh": len(fresh) if fresh is not None else None,
                "labels": list(task.labels),
                # calibration on the same held-out texts, for label-free estimates (online.watch)
                "temperature": round_metric(temperatures["candidate"]),
                "baseline_temperature": round_metric(temperatures["serving"]),
            }
        )
        return Candidate(
            out_dir,
            meta,
            decision,
            len(recent_train),
            len(replay),
            train_seconds,
            eval_seconds,
            frozenset(e.id for e in recent_train),
        )

    def train_candidate(
        self, parent: Path, recent: Sequence[Example], fresh: Sequence[Example] | None = None
    ) -> Candidate:
        """The candidate an update builds: ``build_candidate`` with the fit the trigger calls for.

        After a drift (``fresh`` given) and with ``drift_fit`` "head", the fast head refit comes
        first; when the gate rejects it, a LoRA candidate trains at once (its metrics keep the head
        refit's reason). Otherwise a LoRA update.
        """
        fit: Fit = "head" if fresh is not None and self.config.drift_fit == "head" else "lora"
        candidate = self.build_candidate(parent, recent, fresh, fit)
        if fit == "head" and not candidate.decision.promote and not candidate.decision.wait:
            head_reason = candidate.decision.reason
            self.log(f"{self.model_name}: head refit rejected ({head_reason}); training the adapter")
            shutil.rmtree(candidate.artifact, ignore_errors=True)
            candidate = self.build_candidate(parent, recent, fresh, "lora")
            candidate.decision.metrics["head_refit_rejected"] = head_reason
        return candidate

    def _fit(
        self,
        fit: Fit,
        task: TaskConfig,
        train: list[Example],
        parent: Path,
        out_dir: Path,
        extra: dict[str, Any],
    ) -> Any:
        """Train the candidate into ``out_dir``; its artifact meta."""
        if fit == "head":
            from driftline.models.head_refit import refit_head

            return refit_head(
                task,
                train,
                parent=parent,
                out_dir=out_dir,
                seed=self.seed,
                threads=self.config.threads,
                extra_config=extra,
                cache=self.features,
            )
        from driftline.models.training import train_classifier

        return train_classifier(
            task,
            train,
            None,
            parent=parent,
            out_dir=out_dir,
            epochs=self.config.epochs,
            max_steps=self.config.max_steps,
            batch_size=self.config.batch_size,
            max_length=self.config.max_length,
            lr=self.config.lr,
            head_lr=self.config.head_lr,
            threads=self.config.threads,
            seed=self.seed,
            progress=self.progress,
            extra_config=extra,
        )

    # -- with side effects --------------------------------------------------------------------

    def about_serving(self, model_version: str) -> bool:
        """Whether a drift seen on ``model_version`` concerns what serves now.

        A detection on a version that was replaced since (raised before a promotion, delivered
        after it) says nothing about its successor; answering it would train against a version
        that already learned the change. Unknown versions and a repository that cannot be read
        count as current: a real drift is never dropped for want of bookkeeping.
        """
        if self.swapper is None or not model_version.isdigit():
            return True
        try:
            versions = self.swapper.serving_versions(self.model_name)
        except Exception:  # an unreadable repository: keep the alert
            return True
        return not versions or int(model_version) in versions

    def serving_artifact(self) -> tuple[Path, int]:
        """The serving version's folder in the Triton repository (it is a full artifact) and number."""
        if self.swapper is None:
            raise RuntimeError("no swapper: pass the parent artifact to build_candidate directly")
        versions = self.swapper.serving_versions(self.model_name)
        if not versions:
            raise RuntimeError(f"{self.model_name}: nothing is serving (export a first version)")
        version = max(versions)
        return Path(self.swapper.repository) / self.model_name / str(version), version

    def _alert(self, record: ModelRecord, severity: str) -> None:
        try:
            self.publish(record.to_alert(severity))
        except Exception as exc:  # an alert sink outage must not undo a decision
            self.log(f"alert publish failed: {exc}")

    def _save(self, record: ModelRecord) -> ModelRecord:
        return self.registry.save(record) if self.registry else record

    def run_update(self, trigger: str, since_ts_ms: int | None = None) -> UpdateOutcome:
        """Train, judge and (maybe) hot-swap. Never raises; never leaves serving changed on failure.

        ``since_ts_ms``: when the drift began (``UpdateTrigger.since_ts_ms``); the holdout is drawn
        from feedback that arrived after it. Every outcome is published on the alerts topic:
        promoted (info), waiting for evidence (info), rejected by the gate (warning), failed before
        a decision or during export/swap (critical, serving unchanged).
        """
        outcome = UpdateOutcome(self.task, trigger)
        try:
            return self._run_update(trigger, since_ts_ms, outcome)
        except Exception as exc:  # a bug or outage after the swap step (registry write): say so
            serving = f"version {outcome.version} serves" if outcome.promoted else "serving unchanged"
            outcome.reason = f"update bookkeeping failed ({serving}): {type(exc).__name__}: {exc}"
            self.publish_failure(outcome.reason)
            return outcome

    def _wait(self, outcome: UpdateOutcome, decision: Decision, more: int) -> UpdateOutcome:
        outcome.waiting, outcome.more_labels = True, max(1, more)
        outcome.reason = f"waiting: {decision.reason}"
        self._notify("update waiting", "info", decision.reason, decision.metrics)
        return outcome

    def _run_update(self, trigger: str, since_ts_ms: int | None, outcome: UpdateOutcome) -> UpdateOutcome:
        from driftline.models.artifacts import read_meta
        from driftline.models.triton.export import export

        if self.shadowing and self.pending_shadow() is not None:
            outcome.reason = "a shadow version is being evaluated: no new candidate until it is decided"
            return outcome
        try:
            parent, serving_version = self.serving_artifact()
            recent = self.source.recent_examples(self.task, self.config.max_recent_labels)
            if len(recent) < self.config.min_new_labels:  # counted on the topic, not all stored yet
                return self._wait(
                    outcome,
                    too_few_recent(len(recent), self.config.min_new_labels),
                    self.config.min_new_labels - len(recent),
                )
            fresh = None
            if since_ts_ms is not None:
                fresh = self.source.recent_examples(self.task, self.config.max_recent_labels, since_ts_ms)
                outcome.fresh_labels = len(fresh)
            holdout = update_split(recent, fresh, self.config.holdout_fraction)[1]
            more = self.labels_short(len(holdout))
            if more:  # no candidate could be judged: do not train one
                return self._wait(outcome, too_few(self.policy, len(holdout)), more)
            if fresh is not None:  # nor when none could win enough of it
                short = no_room(self.policy, self.serving_correct(parent, holdout))
                if short is not None:
                    return self._wait(outcome, short, self.labels_to_retry(short))
            self.log(f"{self.model_name}: update triggered by {trigger}; {len(recent)} recent labels")
            self._notify(
                "update started",
                "info",
                f"training a candidate from version {serving_version} on {len(recent)} "
                f"recent labels ({trigger})",
            )
            candidate = self.train_candidate(parent, recent, fresh)
            parent_hash = read_meta(parent).adapter_hash
        except Exception as exc:
            outcome.reason = (
                f"update failed before a decision, serving unchanged: {type(exc).__name__}: {exc}"
            )
            self.publish_failure(outcome.reason)
            return outcome
        outcome.candidate = candidate
        decision = candidate.decision
        if decision.wait:
            shutil.rmtree(candidate.artifact, ignore_errors=True)  # the next try trains afresh
            return self._wait(outcome, decision, self.labels_to_retry(decision))
        record = ModelRecord(
            task=self.model_name,
            adapter_hash=candidate.meta.adapter_hash,
            parent_hash=parent_hash,
            status=ModelStatus.REJECTED if not decision.promote else ModelStatus.PROMOTED,
            metrics={
                **decision.metrics,
                "task": self.task,
                "trigger": trigger,
                "parent_version": serving_version,
            },
            reason=decision.reason,
            artifact_path=str(candidate.artifact),
        )
        if not decision.promote:
            outcome.record = self._save_quietly(record)
            outcome.reason = f"rejected: {decision.reason}"
            self._alert(outcome.record, "warning")
            return outcome
        if self.shadowing:
            return self._start_shadow(outcome, record, candidate, parent)
        try:
            version = export(
                self.task,
                candidate.artifact,
                name=self.model_name,
                promote=False,
                repository=self.swapper.repository,
                inherit_engine_from=engine_parent(decision.metrics.get("fit"), parent),
            )
            engine = read_meta(self.swapper.repository / self.model_name / str(version)).engine
            record = self._save(record.model_copy(update={"version": version, "engine": engine}))
            served, _ = serve_version(
                self.model_name, version, self.swapper, self.registry, reason=decision.reason, record=record
            )
        except ServedButNotRecorded as exc:
            # the new version serves: report that even though the registry write failed
            outcome.promoted, outcome.version = True, exc.version
            outcome.reason = f"promoted version {exc.version}: {decision.reason}"
            outcome.record = exc.record or record
            raise
        except Exception as exc:
            record = record.model_copy(
                update={
                    "status": ModelStatus.REJECTED,
                    "reason": f"export/swap failed, version {serving_version} keeps serving: "
                    f"{type(exc).__name__}: {exc}",
                }
            )
            outcome.record = self._save_quietly(record)
            outcome.reason = record.reason
            self._alert(outcome.record, "critical")
            return outcome
        outcome.promoted, outcome.version = True, version
        outcome.reason = f"promoted version {version}: {decision.reason}"
        outcome.record = served or record
        self._alert(outcome.record, "info")
        return outcome

    def _save_quietly(self, record: ModelRecord) -> ModelRecord:
        """Save, but a registry outage must not hide the decision (the alert still goes out)."""
        try:
            return self._save(record)
        except Exception as exc:
            self.log(f"registry write failed: {type(exc).__name__}: {exc}")
            return record

    # -- shadow phase (online.shadow) ----------------------------------------------------------

    @property
    def judges_live(self) -> bool:
        """Whether this updater can judge versions on live traffic (the shadow phase, the watch after
        promotion): a registry for their state, a swapper to act, and a source of live evidence
        (``ClickHouseSource``: feedback joined to each version, served probabilities, shadow answers).
        Library-level updaters have none of these."""
        return self.registry is not None and self.swapper is not None and hasattr(self.source, "graded_since")

    @property
    def shadowing(self) -> bool:
        """Whether a candidate that passed the gate serves as a shadow first: configured (the
        default) and judgeable live; otherwise it is promoted straight after the gate."""
        return self.shadow_config.enabled and self.judges_live

    def pending_shadow(self) -> ModelRecord | None:
        """The registry row of the candidate running as this model's shadow, if any."""
        if self.registry is None:
            return None
        shadows = [r for r in self.registry.list(self.model_name) if r.status == ModelStatus.SHADOW]
        return max(shadows, key=lambda r: r.updated_ts_ms) if shadows else None

    def _start_shadow(
        self, outcome: UpdateOutcome, record: ModelRecord, candidate: Candidate, parent: Path
    ) -> UpdateOutcome:
        """Export the candidate as the next version (unserved) and load it as the model's shadow."""
        from driftline.models.artifacts import read_meta
        from driftline.models.triton.export import export
        from driftline.models.triton.shadow_model import write_shadow

        repository = Path(self.swapper.repository)
        try:
            version = export(
                self.task,
                candidate.artifact,
                name=self.model_name,
                promote=False,
                repository=repository,
                inherit_engine_from=engine_parent(record.metrics.get("fit"), parent),
            )
            write_shadow(self.model_name, version, repository)
            self.swapper.load_shadow(self.model_name, version)
        except Exception as exc:
            self.swapper.unload_shadow(self.model_name)
            failed = record.model_copy(
                update={
                    "status": ModelStatus.REJECTED,
                    "reason": f"shadow could not start: {type(exc).__name__}: {exc}",
                }
            )
            outcome.record = self._save_quietly(failed)
            outcome.reason = failed.reason
            self._alert(outcome.record, "critical")
            return outcome
        engine = read_meta(repository / self.model_name / str(version)).engine
        shadow = record.model_copy(
            update={
                "status": ModelStatus.SHADOW,
                "version": version,
                "engine": engine,
                "reason": f"shadow: passed the offline gate ({record.reason})",
                "metrics": {**record.metrics, "shadow_started_ts_ms": int(time.time() * 1000)},
            }
        )
        outcome.record = self._save(shadow)
        outcome.version = version
        outcome.reason = f"version {version} runs as the shadow: {record.reason}"
        self._alert(outcome.record, "info")
        return outcome

    def check_shadow(self) -> Decision | None:
        """Judge the pending shadow on its live evidence (``online.shadow``): promote it, reject it,
        or wait. None when no shadow is pending."""
        from driftline.online.gates.shadow_gate import ShadowEvidence, judge_shadow

        pending = self.pending_shadow()
        if pending is None or self.swapper is None:
            return None
        started = int(pending.metrics.get("shadow_started_ts_ms", pending.updated_ts_ms))
        serving = str(pending.metrics.get("parent_version", ""))
        graded = self.source.graded_since(self.task, serving, started, 500)  # type: ignore[attr-defined]
        try:
            answers = self._shadow_answers([text for text, _, _ in graded])
        except ModelNotReadyError:  # Triton restarted since: its folder is still there, load it again
            self.swapper.load_shadow(self.model_name, pending.version)
            answers = self._shadow_answers([text for text, _, _ in graded])
        shadow_right = [answer == label for answer, (_, label, _) in zip(answers, graded, strict=True)]
        serving_right = [correct for _, _, correct in graded]
        mirrored, agreed = self.source.shadow_agreement(self.model_name, pending.version)  # type: ignore[attr-defined]
        evidence = ShadowEvidence(
            elapsed_s=max(0.0, time.time() - started / 1000),
            mirrored=mirrored,
            agreed=agreed,
            paired=Paired.of(shadow_right, serving_right),
            shadow_right=sum(shadow_right),
            serving_right=sum(serving_right),
        )
        decision = judge_shadow(evidence, self.shadow_config)
        if decision.wait:
            return decision
        decided = pending.model_copy(
            update={"metrics": {**pending.metrics, **decision.metrics}, "reason": decision.reason}
        )
        self.swapper.unload_shadow(self.model_name)
        if decision.promote:
            serve_version(
                self.model_name,
                pending.version,
                self.swapper,
                self.registry,
                reason=decision.reason,
                record=decided,
                publish=self.publish,
            )
            self.log(f"{self.model_name}: version {pending.version} serves after its shadow")
        else:
            self._alert(self._save(decided.model_copy(update={"status": ModelStatus.REJECTED})), "warning")
            self.log(f"{self.model_name}: shadow version {pending.version} rejected: {decision.reason}")
        return decision

    def _shadow_answers(self, texts: list[str]) -> list[str]:
        """The shadow's labels for ``texts``, asked through Triton like any client."""
        if not texts:
            return []
        import asyncio

        from driftline.models.inference.triton import TritonClient
        from driftline.models.triton.shadow_model import shadow_name

        async def ask() -> list[str]:
            async with TritonClient(timeout_s=120) as client:
                return [p.label for p in await client.predict(shadow_name(self.model_name), texts)]

        return asyncio.run(ask())

    # -- after a promotion ---------------------------------------------------------------------

    def watch_promotion(self) -> WatchReading | None:
        """Judge the serving version against the version before it, on its live feedback and on its
        estimated accuracy (``online.watch``); roll back on a significant drop. None when there is
        nothing to watch."""
        from driftline.online.serving.registry import RegistryError

        cfg = self.rollback_config
        if not cfg.enabled or not self.judges_live:
            return None
        current = self.registry.serving(self.model_name)
        if current is None or current.version in self._cleared:
            return None
        try:
            previous = self.registry.rollback_target(self.model_name)
        except RegistryError:
            return None  # nothing to go back to
        verdict = self._watch_labels(current, previous)
        if verdict is not None and verdict.decision == "cleared":
            self._cleared.add(current.version)
            self.log(f"{self.model_name}: version {current.version} cleared after {verdict.labels} labels")
        if (verdict is None or verdict.decision == "watching") and cfg.estimate:
            estimated = self._watch_estimate(current, previous)
            if estimated is not None and (estimated.decision == "rollback" or verdict is None):
                verdict = estimated
        if verdict is None or verdict.decision != "rollback":
            return verdict
        why = verdict.why(previous.version, cfg)
        rollback(self.model_name, self.registry, self.swapper, publish=self.publish, why=why)
        self._notify(
            "rolled back",
            "critical",
            f"version {current.version} rolled back to {previous.version}: {why}",
            {**verdict.evidence(), "version": current.version, "rolled_back_to": previous.version},
        )
        return verdict

    def _watch_labels(self, current: ModelRecord, previous: ModelRecord) -> WatchReading | None:
        """The SPRT on the serving version's joined feedback (None: no baseline yet)."""
        baseline = self._watch_baseline(current, previous)
        if baseline is None:
            return None
        outcomes = self.source.outcomes(  # type: ignore[attr-defined]
            self.task,
            current.version,
            current.adapter_hash,
            self.rollback_config.max_labels,
            since_ts_ms=current.updated_ts_ms,
        )
        return sprt(outcomes, baseline, self.rollback_config)

    def _watch_estimate(self, current: ModelRecord, previous: ModelRecord) -> WatchReading | None:
        """The SPRT on the serving version's estimated accuracy, without labels.

        Both versions are calibrated with the temperatures the gate fitted on the same held-out
        texts (``temperature``, ``baseline_temperature``): the gate judged the trained artifact, so a
        served version whose confidence no longer matches it (a broken export or engine, traffic the
        version cannot read) shows up before its labels do. None without those temperatures (a
        version promoted by hand: uncalibrated confidence says little, its labels judge it) or when
        the previous version served too few predictions to estimate its baseline.
        """
        from driftline.online.gates.estimate import calibrate, estimate_accuracy

        cfg = self.rollback_config
        new_t, old_t = current.metrics.get("temperature"), current.metrics.get("baseline_temperature")
        if not new_t or not old_t:
            return None
        served = self.source.served_probabilities  # type: ignore[attr-defined]
        before = served(self.task, previous.version, previous.adapter_hash, cfg.estimate_window, newest=True)
        if len(before) < cfg.min_baseline:
            return None
        baseline = estimate_accuracy(np.asarray(before), float(old_t))
        after = served(
            self.task,
            current.version,
            current.adapter_hash,
            cfg.estimate_max_events,
            since_ts_ms=current.updated_ts_ms,
        )
        outcomes = calibrate(np.asarray(after), float(new_t)).max(axis=1).tolist() if after else []
        return sprt(outcomes, baseline, cfg, kind="estimate")

    def _watch_baseline(self, current: ModelRecord, previous: ModelRecord) -> float | None:
        """The decision's baseline accuracy, else the previous version's live one (None: too few labels)."""
        if "baseline_accuracy" in current.metrics:
            return float(current.metrics["baseline_accuracy"])
        cfg = self.rollback_config
        live = self.source.outcomes(  # type: ignore[attr-defined]
            self.task, previous.version, previous.adapter_hash, cfg.baseline_window, newest=True
        )
        return sum(live) / len(live) if len(live) >= cfg.min_baseline else None

    def publish_failure(self, reason: str) -> None:
        """Publish a critical model alert saying the update failed and why."""
        self.log(reason)
        self._notify("update failed", "critical", reason)

    def _notify(self, what: str, severity: str, message: str, evidence: dict[str, Any] | None = None) -> None:
        """A ``model`` alert that is not a registry decision (an update started, an update failed)."""
        now = int(time.time() * 1000)
        alert = {
            "alert_id": f"{what.replace(' ', '-')}-{self.model_name}-{now}",
            "kind": "model",
            "task": self.model_name,
            "created_ts_ms": now,
            "severity": severity,
            "subject": f"{self.model_name} {what}",
            "message": message,
            "evidence": {**(evidence or {}), "message": message, "task": self.task},
        }
        try:
            self.publish(alert)
        except Exception as exc:  # an alert sink outage must not stop an update
            self.log(f"alert publish failed: {exc}")
