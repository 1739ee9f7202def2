# Triton for production: the NGC image plus what driftline's python-backend models import
# (torch, transformers, peft). The model code itself is mounted from the repo (models/, compose/).
FROM nvcr.io/nvidia/tritonserver:24.10-py3
COPY compose/constraints.txt /tmp/constraints.txt
RUN pip install --no-cache-dir -c /tmp/constraints.txt torch transformers peft safetensors tokenizers pydantic pyyaml \
    && rm /tmp/constraints.txt
