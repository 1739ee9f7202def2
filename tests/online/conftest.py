"""Tests of ``driftline.online`` (online/): drift detectors (shared conformance), monitors,
feedback, the registry, hot swaps, the updater and the emerging-class scenario."""
