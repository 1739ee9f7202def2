"""Hot-swap a Triton model to another version without failing or losing a request.

``TritonSwapper.swap``: load new beside old, wait until ready, drain old, unload it; on failure the previous
version list is restored and ``SwapError`` says why.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tritonclient.utils import InferenceServerException

from driftline.clients import triton_client
from driftline.models.triton.export import serving_versions, set_serving_versions
from driftline.settings import get_settings


class SwapError(RuntimeError):
    """The new version could not be brought up; the previous versions are still serving."""


@dataclass
class SwapReport:
    """What one swap did: versions before and after, load and drain times, the steps taken."""

    model: str
    old_versions: list[int]
    new_version: int
    load_s: float = 0.0
    drain_s: float = 0.0
    drained: bool = True
    steps: list[str] = field(default_factory=list)


class TritonSwapper:
    """Control-plane client for version swaps (separate from the data-plane ``TritonClient``)."""

    def __init__(
        self,
        url: str | None = None,
        repository: Path | None = None,
        *,
        ready_timeout_s: float = 600.0,
        drain_quiet_s: float = 1.0,
        drain_timeout_s: float = 30.0,
        log: Callable[[str], None] | None = None,
    ) -> None:
        settings = get_settings().triton
        self.url = url or settings.grpc_url
        self.repository = repository or settings.repository
        self.ready_timeout_s = ready_timeout_s
        self.drain_quiet_s = drain_quiet_s
        self.drain_timeout_s = drain_timeout_s
        self._log = log or (lambda message: None)
        self._client = triton_client(url=self.url)

    def close(self) -> None:
        """Close the gRPC channel."""
        self._client.close()

    def serving_versions(self, model: str) -> list[int]:
        """The versions the repository's config.pbtxt lists for ``model``."""
        return serving_versions(model, self.repository)

    def _load(self, model: str, versions: list[int], report: SwapReport) -> None:
        set_serving_versions(model, versions, self.repository)
        report.steps.append(f"load {versions}")
        self._log(f"{model}: loading versions {versions}")
        self._client.load_model(model, client_timeout=self.ready_timeout_s)

    def _wait_ready(self, model: str, version: int) -> None:
        deadline = time.monotonic() + self.ready_timeout_s
        while time.monotonic() < deadline:
            try:
                if self._client.is_model_ready(model, str(version)):
                    return
            except InferenceServerException:
                pass
            time.sleep(0.2)
        raise SwapError(f"{model} version {version} not ready after {self.ready_timeout_s:.0f}s")

    def load_shadow(self, model: str, version: int) -> None:
        """Load ``model``'s shadow (laid out by ``models.shadow.write_shadow``) and wait until it answers."""
        from driftline.models.triton.shadow_model import shadow_name

        name = shadow_name(model)
        self._log(f"{model}: loading version {version} as the shadow {name}")
        try:
            self._client.load_model(name, client_timeout=self.ready_timeout_s)
        except InferenceServerException as exc:
            raise SwapError(f"{name}: could not load version {version}: {exc}") from exc
        self._wait_ready(name, version)

    def unload_shadow(self, model: str) -> None:
        """Unload ``model``'s shadow from Triton and delete its folder (nothing serves from it)."""
        from driftline.models.triton.shadow_model import remove_shadow, shadow_name

        try:
            self._client.unload_model(shadow_name(model), client_timeout=self.ready_timeout_s)
        except InferenceServerException as exc:  # not loaded: nothing to unload
            self._log(f"{model}: shadow unload: {exc}")
        remove_shadow(model, self.repository)

    def _inference_count(self, model: str, version: int) -> int:
        try:
            stats = self._client.get_inference_statistics(model, str(version), as_json=True)
        except InferenceServerException:
            return -1
        return sum(int(s.get("inference_count", 0)) for s in stats.get("model_stats", []))

    def drain(self, model: str, versions: list[int]) -> tuple[bool, float]:
        """Wait until ``versions`` get no more requests; returns (quiet reached, seconds waited)."""
        started = time.monotonic()
        counts = {v: self._inference_count(model, v) for v in versions}
        quiet_since = time.monotonic()
        while time.monotonic() - started < self.drain_timeout_s:
            time.sleep(min(0.25, self.drain_quiet_s / 2))
            now = {v: self._inference_count(model, v) for v in versions}
            if now != counts:
                counts, quiet_since = now, time.monotonic()
            elif time.monotonic() - quiet_since >= self.drain_quiet_s:
                return True, time.monotonic() - started
        return False, time.monotonic() - started

    def swap(self, model: str, new_version: int) -> SwapReport:
        """Make ``new_version`` the only serving version of ``model`` (promotion or rollback)."""
        old = self.serving_versions(model)
        report = SwapReport(model, old, new_version)
        started = time.monotonic()
        try:
            self._load(model, sorted({*old, new_version}), report)
            self._wait_ready(model, new_version)
        except (InferenceServerException, SwapError, OSError) as exc:
            if old:
                try:
                    self._load(model, old, report)
                except InferenceServerException as restore_exc:  # pragma: no cover - server gone
                    report.steps.append(f"restore failed: {restore_exc}")
            raise SwapError(f"{model}: could not load version {new_version}: {exc}") from exc
        report.load_s = time.monotonic() - started
        retiring = [v for v in old if v != new_version]
        if retiring:
            report.drained, report.drain_s = self.drain(model, retiring)
            self._load(model, [new_version], report)
        self._log(f"{model}: serving version {new_version} (was {old})")
        return report
