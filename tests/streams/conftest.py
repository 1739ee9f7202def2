"""Tests of ``driftline.streams`` (streams/): decoding, micro-batching, the commit rule, the learning
agents, and the pipeline end to end with real worker processes (``harness.PipelineRun``)."""
