"""Engine names (``models.engines``): each is ``<library>-<graph>`` with a known graph; an unknown
one is a clear error.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from driftline.models.engines import (
    ENGINE_NAMES,
    REFERENCE_ENGINE,
    UnknownEngineError,
    load_engine,
)
from driftline.models.engines.base import GRAPH_FILES


def test_engine_names_follow_the_library_graph_scheme() -> None:
    assert REFERENCE_ENGINE in ENGINE_NAMES
    for name in ENGINE_NAMES:
        library, graph = name.split("-", 1)
        assert library in {"torch", "ort", "openvino"}
        assert library == "torch" or graph in GRAPH_FILES
    with pytest.raises(UnknownEngineError, match="ort-fp16"):
        load_engine(Path("/nonexistent"), "ort-fp16")
