"""Model serving internals: what Triton's python backend runs, and the explanations beside it.

- ``codec.py`` (texts -> token ids, head or head+tail truncation) and ``batching.py`` (length-sorted
  calls within a token budget): what every inference client does before a call;
- ``triton_model.py``: Triton's python backend running a version's chosen engine
  (``driftline.models.engines``) on the tensor contract of ``driftline.models.inference.base``;
- ``explain.py`` (the attribution method), ``explainer.Explainer`` (word attributions from a version's
  torch weights) and ``explainer_pool.ExplainerPool`` (a batch of predictions -> ``explanations`` rows,
  errors included, a few versions kept loaded): explanations off the serving path.

Kept import-light: importing this package imports neither torch nor transformers.
"""
