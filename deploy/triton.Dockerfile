# The Triton image the compose stack runs: the NGC release of the local server (24.10 = Triton 2.51.0) plus the
# packages the Python-backend models import (tokenizer, CPU ONNX Runtime for the int8 models, PyAV and DALI for
# video decoding). Build context: the repository root (docker-compose.yml does this).
ARG TRITON_IMAGE=nvcr.io/nvidia/tritonserver:24.10-py3
FROM ${TRITON_IMAGE}
COPY deploy/requirements-triton.txt /tmp/requirements-triton.txt
RUN pip install --no-cache-dir -r /tmp/requirements-triton.txt && rm /tmp/requirements-triton.txt
