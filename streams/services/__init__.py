"""Consumers that are not Faust agents: the explainer, rescore and the update loop."""
