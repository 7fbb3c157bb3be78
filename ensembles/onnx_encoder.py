"""Triton Python-backend model: an ONNX graph run by ONNX Runtime on the CPU (the pytriton tritonserver has no
native onnxruntime backend; GPU targets use the native ``onnxruntime_onnx`` platform instead).

Input and output names come from the model's config and must match the ONNX graph's (checked at load).
Requests of one dynamic batch may carry different sequence lengths (the config sets ``allow_ragged_batch``): rows are
right-padded with 0 to a common length. With ``sort_by_length`` (needs an ``attention_mask`` input), rows are sorted
by their real length and run in sub-batches of ``sub_batch_rows``, each trimmed to its own longest row, so a batch of
mixed short and long texts does not pay for padding (sentence-transformers' trick, applied per dynamic batch).

Parameters: ``model_filename`` (in the version folder), ``intra_op_threads`` (0 = ORT default),
``sort_by_length`` (true/false), ``sub_batch_rows``.
"""

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        path = Path(args["model_repository"]) / args["model_version"] / params.get("model_filename", "model.onnx")
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(params.get("intra_op_threads", "0"))
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_names = [t["name"] for t in config["input"]]
        self.output_names = [t["name"] for t in config["output"]]
        graph_in = {i.name for i in self.session.get_inputs()}
        graph_out = {o.name for o in self.session.get_outputs()}
        if set(self.input_names) != graph_in or not set(self.output_names) <= graph_out:
            raise pb_utils.TritonModelException(
                f"{path.name}: config tensors {self.input_names} -> {self.output_names} do not match the ONNX graph's "
                f"{sorted(graph_in)} -> {sorted(graph_out)}; re-run `tritonrepo build`")
        self.sort = params.get("sort_by_length", "false").lower() == "true" and "attention_mask" in graph_in
        self.sub_batch_rows = int(params.get("sub_batch_rows", "32"))

    def _gather(self, requests):
        """Concatenate every request's inputs along the batch axis, right-padding ragged dimensions with 0."""
        per_input = {}
        for name in self.input_names:
            arrays = [pb_utils.get_input_tensor_by_name(r, name).as_numpy() for r in requests]
            if len({a.shape[1:] for a in arrays}) == 1:
                per_input[name] = np.concatenate(arrays)
                continue
            width = max(a.shape[1] for a in arrays)
            out = np.zeros((sum(len(a) for a in arrays), width, *arrays[0].shape[2:]), dtype=arrays[0].dtype)
            row = 0
            for a in arrays:
                out[row:row + len(a), : a.shape[1]] = a
                row += len(a)
            per_input[name] = out
        return per_input, [len(pb_utils.get_input_tensor_by_name(r, self.input_names[0]).as_numpy())
                           for r in requests]

    def _run(self, feeds):
        if not self.sort:
            return self.session.run(self.output_names, feeds)
        lengths = feeds["attention_mask"].sum(axis=1)
        order = np.argsort(lengths, kind="stable")
        outputs = None
        for start in range(0, len(order), self.sub_batch_rows):
            rows = order[start:start + self.sub_batch_rows]
            width = max(int(lengths[rows].max()), 1)
            part = self.session.run(self.output_names, {k: v[rows, :width] for k, v in feeds.items()})
            if outputs is None:
                outputs = [np.empty((len(order), *p.shape[1:]), dtype=p.dtype) for p in part]
            for out, p in zip(outputs, part):
                out[rows] = p
        return outputs

    def execute(self, requests):
        feeds, counts = self._gather(requests)
        try:
            outputs = self._run(feeds)
        except Exception as e:  # ORT raises its own types; answer every request of the batch with the reason
            error = pb_utils.TritonError(f"ONNX Runtime failed: {e}")
            return [pb_utils.InferenceResponse(error=error) for _ in requests]
        responses, start = [], 0
        for n in counts:
            responses.append(pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor(name, out[start:start + n]) for name, out in zip(self.output_names, outputs)
            ]))
            start += n
        return responses
