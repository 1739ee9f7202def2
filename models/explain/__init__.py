"""Explanations: which events get one (``policy``), the attribution method (``gradients``), the top
words of a version (``explainer``) and explanation rows for a batch (``pool``). Import-light."""
