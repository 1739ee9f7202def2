"""Building a pipeline worker (streams.app): where the Faust app keeps its local files."""

from __future__ import annotations

from pathlib import Path

from driftline.settings import Settings
from driftline.streams.app import build_pipeline
from tests.unit.streams.test_stages import FakeClient


def test_the_worker_keeps_its_faust_data_under_the_run_dir(tmp_path: Path) -> None:
    settings = Settings(run_dir=tmp_path)
    app = build_pipeline(FakeClient(), settings=settings, web_port=1).app
    datadir = Path(app.conf.datadir)
    assert datadir.is_relative_to(tmp_path), datadir
    assert app.conf.id in datadir.parts, "one folder per app id"
    assert datadir.parent.is_dir(), "Faust creates only the last folder itself"
