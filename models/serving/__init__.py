"""Model serving internals shared by Triton's python backend and the in-process ``LocalClient``.

``ClassifierRunner`` (runner.py) loads an exported artifact and predicts with explanations;
``triton_model.TritonPythonModel`` adapts it to Triton's python backend; ``explain.py`` holds the
attribution method. Explanations off the serving path: ``weights.py`` loads a version's merged torch
weights, ``explainer.Explainer`` computes word attributions from them, and
``explainer_pool.ExplainerPool`` turns a batch of predictions into ``explanations`` rows (errors
included) with a few versions kept loaded. Kept import-light: importing this package does not import
torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from driftline.models.serving.runner import ClassifierRunner, ItemResult

__all__ = ["ClassifierRunner", "ItemResult"]


def __getattr__(name: str):  # lazy: the CLI and clients import this package without loading torch
    if name in __all__:
        from driftline.models.serving import runner

        return getattr(runner, name)
    raise AttributeError(name)
