# The one-shot image of the opt-in TensorRT step (deploy/compose.tensorrt.yml): `tritonrepo export tensorrt` builds the
# fp32 text encoders' plans on this host's GPU with TensorRT 10.5 (the release of the NGC 24.10 Triton image, whose
# tensorrt_plan backend loads them), validates them against the fp32 ONNX graph on ONNX Runtime, and switches only the
# validated models' configs to them. The NGC PyTorch 24.10 image carries CUDA 12.6, TensorRT 10.5 and PyTorch (the
# plan's validation run uses CUDA tensors as buffers). Build context: the repository root.
ARG BASE=nvcr.io/nvidia/pytorch:24.10-py3
FROM ${BASE}
RUN python -c "import tensorrt" 2>/dev/null || pip install --no-cache-dir "tensorrt-cu12==10.5.*"
COPY pyproject.toml constraints.txt /src/
COPY tritonrepo /src/tritonrepo
COPY export /src/export
COPY ensembles /src/ensembles
COPY clients /src/clients
COPY services /src/services
COPY perf /src/perf
COPY deploy/requirements-triton.txt /src/deploy/requirements-triton.txt
RUN pip install --no-cache-dir /src "onnxruntime==1.23.2" "tokenizers==0.23.3"
ENV TRITONREPO_HOME=/src
ENTRYPOINT []
