"""The live-stack test kit: workers on private topics, served models, waits."""
