"""Python-backend models (pre/post-processing and ONNX Runtime on CPU) and ensemble wiring helpers.

Each module here is self-contained (numpy, tokenizers, onnxruntime and Triton's ``triton_python_backend_utils``):
`tritonrepo build` copies it into ``model_repository/<model>/1/model.py``, so the repository runs in any Triton.
"""
