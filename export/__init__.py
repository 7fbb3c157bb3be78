"""Per-model export: framework model -> ONNX (fp32, int8) -> numeric validation -> model repository.

Nothing is installed into the repository unless it passed validation against its framework model.
"""
