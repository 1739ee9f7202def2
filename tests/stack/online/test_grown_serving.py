"""An accepted label reaches serving: the updater grows the head, Triton serves both widths at once.

From a small five-label ``news_topic`` artifact, the updater builds a candidate from feedback that
names ``science`` (accepted: in the label set it is given) and ``gossip`` (only proposed: not in
it). The candidate has six outputs, ``science`` last, and never trains on ``gossip``. Exported
next to the parent under one Triton model, both versions load from one config: version 1 answers
with five probabilities and version 2 with six, each naming its own labels, and the model-level
``labels`` parameter is the newest version's.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from driftline.clients import triton_client
from driftline.models.datasets import Example, load_dataset, text_id
from driftline.models.tasks import get_task
from driftline.models.triton.export import CONFIG_FILE, export, read_config, set_serving_versions
from driftline.online.config import UpdaterConfig
from driftline.online.update.sources import ListSource
from driftline.online.update.updater import Updater
from tests.support.serving_support import (
    exported_model_dir,
    require_triton,
    small_artifact,
    unique_model_name,
)

pytestmark = [pytest.mark.stack, pytest.mark.slow]

SCIENCE = [
    "Astronomers measured the expansion rate of the universe with a new space telescope.",
    "Physicists observed quantum entanglement between photons sent through optical fibre.",
    "Biologists sequenced the genome of a deep sea microbe that lives without oxygen.",
    "Chemists built a catalyst that splits water into hydrogen using only sunlight.",
    "Fossil teeth show that early mammals ate insects rather than plants, a study says.",
    "Researchers mapped every neuron of a fruit fly brain in unprecedented detail.",
    "A probe landed on a comet and drilled into its icy surface for samples.",
    "Geologists dated the oldest rocks on Earth to more than four billion years.",
    "Climate scientists found that polar ice sheets are melting faster than modelled.",
    "Neuroscientists recorded memories forming in the hippocampus of sleeping mice.",
]
GOSSIP = [
    "The singer and the footballer were spotted leaving a restaurant together.",
    "Rumours say the reality star is secretly engaged to her co-host.",
    "The actor's surprise birthday party ended with a feud between two guests.",
]


def _feedback() -> list[Example]:
    news = [Example(e.id, e.text[:300], e.label) for e in load_dataset("bbc_news").split("validation")[:40]]
    extra = [Example(text_id(t), t, "science") for t in SCIENCE]
    extra += [Example(text_id(t), t, "gossip") for t in GOSSIP]
    return news + extra


def test_accepted_label_grows_the_head_and_serves_beside_the_parent(tmp_path: Path) -> None:
    require_triton()
    task = get_task("news_topic")
    parent = small_artifact("news_topic")
    feedback = _feedback()
    config = UpdaterConfig(max_steps=6, epochs=1, replay_size=20, batch_size=8, max_length=64, threads=2)
    updater = Updater(
        "news_topic", source=ListSource(feedback), config=config, artifacts_dir=tmp_path,
        progress=False, original_eval_size=30, log=lambda message: None,
        label_set=lambda: [*task.labels, "science"],
    )  # fmt: skip
    candidate = updater.build_candidate(parent, feedback)
    assert candidate.meta.labels == [*task.labels, "science"]
    assert candidate.meta.train_config["grown_labels"] == ["science"]
    assert candidate.decision.metrics["labels"] == [*task.labels, "science"]
    gossip = {e.id for e in feedback if e.label == "gossip"}
    assert not gossip & candidate.trained_ids  # proposed, not accepted: never trained on

    require_triton()
    name = unique_model_name("grown")
    client = triton_client()
    with exported_model_dir(name) as model_dir:
        assert export("news_topic", parent, name=name, promote=True) == 1
        assert export("news_topic", candidate.artifact, name=name, promote=False) == 2
        set_serving_versions(name, [1, 2])
        client.load_model(name)
        try:
            params = read_config(model_dir / CONFIG_FILE).parameters
            assert json.loads(params["labels"].string_value) == [*task.labels, "science"]
            old, new = asyncio.run(_predict_both(name, SCIENCE[:3]))
            assert [p.model_version for p in old] == ["1"] * 3 and [p.model_version for p in new] == ["2"] * 3
            assert all(set(p.probabilities) == set(task.labels) for p in old)
            assert all(set(p.probabilities) == {*task.labels, "science"} for p in new)
            assert all(abs(sum(p.probabilities.values()) - 1) < 1e-3 for p in old + new)
        finally:
            client.unload_model(name)
            client.close()


async def _predict_both(name: str, texts: list[str]):
    from driftline.models.inference.triton import TritonClient

    async with TritonClient(timeout_s=60) as client:
        return await client.predict(name, texts, version="1"), await client.predict(name, texts, version="2")
