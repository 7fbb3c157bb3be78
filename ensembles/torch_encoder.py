"""Triton Python-backend model: ``onnx_encoder`` with the Hugging Face checkpoint run by PyTorch instead of the ONNX
graph, on the instance's GPU when it has one. Used only by the GPU profiles of hosts whose image has PyTorch but no
CUDA build of ONNX Runtime (perf/gpu_profile.py installs it with ``onnx_encoder.py`` beside it); no model of the
repository names it, since the serving images have no PyTorch.

Parameters, besides ``onnx_encoder``'s batching ones: ``checkpoint`` (folder in the version folder: config.json,
model.safetensors), ``torch_head`` (``mean_pool_l2``: sentence embeddings; ``logits``), ``torch_dtype`` (default
float16), ``torch_device`` (default: the instance's GPU for ``KIND_GPU``, else cpu), ``random_weights`` (true: a
checkpoint without weights gets seeded random ones of the same architecture, for throughput measurements only;
otherwise missing weights fail the load).
"""

import numpy as np
import triton_python_backend_utils as pb_utils

from .onnx_encoder import TritonPythonModel as OnnxEncoder
from .parameters import TorchEncoderParameters


class TorchSession:
    """The ``run(output_names, feeds)`` of an ONNX Runtime session, over a Hugging Face checkpoint in PyTorch: the
    exported graph's computation (``mean_pool_l2``: the SBERT export's pooling and L2 norm; ``logits``: the model's
    logits, one score per row for a single-label classifier)."""

    def __init__(self, checkpoint, input_names, output_names, head, dtype, device, random_weights):
        import torch
        import transformers

        if head not in ("mean_pool_l2", "logits") or len(output_names) != 1:
            raise pb_utils.TritonModelException(f"torch runtime: head {head!r} with outputs {output_names} is not "
                                                "one of mean_pool_l2 or logits with one output")
        config = transformers.AutoConfig.from_pretrained(str(checkpoint))
        cls = transformers.AutoModel if head == "mean_pool_l2" else (
            transformers.AutoModelForTokenClassification if output_names == ["logits"]
            else transformers.AutoModelForSequenceClassification)
        if (checkpoint / "model.safetensors").exists():
            model = cls.from_pretrained(str(checkpoint), dtype=getattr(torch, dtype))
        elif random_weights:
            torch.manual_seed(0)
            model = cls.from_config(config, dtype=getattr(torch, dtype))
        else:
            raise pb_utils.TritonModelException(f"torch runtime: no model.safetensors in {checkpoint}")
        self.torch, self.head, self.device = torch, head, device
        self.model = model.to(device).eval()
        self.input_names = input_names
        # an index past a table is a device-side assert on a GPU, which breaks the CUDA context for every later
        # request: refuse such input before it gets there
        self.limits = {name: size for name, size in (("input_ids", config.vocab_size),
                                                     ("token_type_ids", getattr(config, "type_vocab_size", None)))
                       if size and name in input_names}

    def run(self, output_names, feeds):
        torch = self.torch
        for name, size in self.limits.items():
            if feeds[name].size and feeds[name].max() >= size:
                raise ValueError(f"{name} holds {feeds[name].max()}, past the model's table of {size}")
        with torch.inference_mode():
            inputs = {k: torch.from_numpy(np.ascontiguousarray(feeds[k])).to(self.device) for k in self.input_names}
            out = self.model(**inputs)
            if self.head == "mean_pool_l2":
                mask = inputs["attention_mask"].unsqueeze(-1).to(out.last_hidden_state.dtype)
                pooled = (out.last_hidden_state * mask).sum(1) / mask.sum(1).clamp(min=1e-4)
                result = torch.nn.functional.normalize(pooled.float(), p=2, dim=1)
            else:
                result = out.logits.float()
            return [result.cpu().numpy()]


class TritonPythonModel(OnnxEncoder):
    runtime = "PyTorch"
    parameters = TorchEncoderParameters

    def _open_session(self, version, params, args):
        gpu = args.get("model_instance_kind") == "GPU"
        device = params.torch_device or (f"cuda:{args['model_instance_device_id']}" if gpu else "cpu")
        return TorchSession(version / params.checkpoint, self.input_names, self.output_names, params.torch_head,
                            params.torch_dtype, device, params.random_weights)
