"""Background services (explainer, updater) yield the CPU to serving, across session groups too."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PROBE = """
import json, os
from pathlib import Path
from driftline.apps.cli.pipeline import yield_cpu_to_serving
yield_cpu_to_serving()
group = Path("/proc/self/autogroup")
print(json.dumps({"nice": os.nice(0), "autogroup": group.read_text() if group.exists() else None}))
"""


def probe(*, new_session: bool, nice: str) -> dict:
    env = {**os.environ, "DRIFTLINE_BACKGROUND_NICE": nice}
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True,
        start_new_session=new_session, timeout=60,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_session_leader_lowers_itself_and_its_session_group() -> None:
    seen = probe(new_session=True, nice="7")
    assert seen["nice"] == os.nice(0) + 7
    if seen["autogroup"] is None:
        pytest.skip("this kernel has no autogroup scheduling: the thread nice is all there is")
    assert seen["autogroup"].strip().endswith("nice 7")


def test_a_process_in_someone_elses_session_leaves_the_group_alone() -> None:
    group = Path("/proc/self/autogroup")
    before = group.read_text() if group.exists() else None
    seen = probe(new_session=False, nice="5")
    assert seen["nice"] == os.nice(0) + 5
    assert (group.read_text() if group.exists() else None) == before  # our shell's group: untouched


def test_zero_keeps_the_priority() -> None:
    seen = probe(new_session=True, nice="0")
    assert seen["nice"] == os.nice(0)
