"""How far label-free accuracy estimates are from measured accuracy: ``estimate_abs_error``.

The quick demo's first news adapter (trained without the class that emerges later, cached by the
demo) classifies every BBC text it did not train on. Its temperature is fitted on a holdout of the
known classes (``driftline.online.gates.estimate``). Two streams of windows are then scored:

- *stationary*: the remaining known-class texts, in windows of ``window`` events;
- *shifted*: the same windows with the new class mixed in at the demo's share, which the model
  cannot name.

For each window the CBPE estimate (mean calibrated top probability) is compared with the accuracy
measured against the true labels; the mean absolute difference is ``estimate_abs_error``
(stationary) and ``estimate_abs_error_shifted``. The uncalibrated estimate (T = 1) is reported too.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np

from driftline.apps.testing.harness import quick_demo_adapter
from driftline.settings import get_settings


def measure_estimate(window: int = 50, seed: int = 0) -> dict[str, Any]:
    """The estimate's mean absolute error per window, stationary and shifted, with and without calibration."""
    from driftline.apps.demo.config import DemoConfig
    from driftline.models.cache import training_data
    from driftline.models.classifier import load_classifier
    from driftline.models.datasets import load_dataset
    from driftline.models.tasks import get_task
    from driftline.online.gates.estimate import fit_temperature, mean_abs_error, window_errors

    config = DemoConfig.preset(quick=True, run_dir=get_settings().run_dir / "estimate-bench")
    task = get_task("news_topic")
    artifact = quick_demo_adapter()
    model = load_classifier(artifact)
    dataset = load_dataset(task.dataset)
    # every text the adapter never trained on: the validation and test splits and the rest of train
    plan = config.news_train
    trained, _ = training_data(task, exclude=[config.new_class], limit=plan.limit_per_class, seed=config.seed)
    seen = {e.id for e in trained}
    test = [e for split in ("train", "validation", "test") for e in dataset.split(split) if e.id not in seen]
    random.Random(seed).shuffle(test)
    known = [e for e in test if e.label != config.new_class]
    new = [e for e in test if e.label == config.new_class]
    holdout, rest = known[: len(known) // 3], known[len(known) // 3 :]

    def scored(examples: list[Any]) -> tuple[np.ndarray, np.ndarray]:
        probs = model.predict_proba([e.text for e in examples])
        # a class the head lacks (undeclared) can never be right: label -1
        index = {label: i for i, label in enumerate(model.labels)}
        return probs, np.array([index.get(e.label, -1) for e in examples])

    t = fit_temperature(*scored(holdout))
    stationary = scored(rest)
    per_window = max(1, round(window * config.new_class_share))
    mixed: list[Any] = []
    old, fresh = iter(rest), iter(new)
    for _ in range(min(len(rest) // (window - per_window), len(new) // per_window)):
        chunk = [e for _, e in zip(range(window - per_window), old, strict=False)]
        chunk += [e for _, e in zip(range(per_window), fresh, strict=False)]
        mixed += chunk
    shifted = scored(mixed)
    result = {
        "estimate_temperature": round(t, 3),
        "estimate_window": window,
        "estimate_abs_error": mean_abs_error(window_errors(*stationary, t, window)),
        "estimate_abs_error_shifted": mean_abs_error(window_errors(*shifted, t, window)),
        "estimate_abs_error_uncalibrated": mean_abs_error(window_errors(*stationary, 1.0, window)),
        "estimate_windows": len(window_errors(*stationary, t, window)),
        "estimate_shifted_windows": len(window_errors(*shifted, t, window)),
    }
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in result.items()}
