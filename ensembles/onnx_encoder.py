"""Triton Python-backend model: an ONNX graph run by ONNX Runtime on the CPU (the pytriton tritonserver has no
native onnxruntime backend; GPU targets use the native ``onnxruntime_onnx`` platform instead).

Input and output names come from the model's config and must match the ONNX graph's (checked at load).
Requests of one dynamic batch may carry different sequence lengths (the config sets ``allow_ragged_batch``): rows are
right-padded with 0 to a common length. With ``sort_by_length`` (needs an ``attention_mask`` input), rows are sorted
by their real length and cut into sub-batches whose padding stays within ``padding_tolerance`` of their real tokens
(at most ``max_sub_batch`` rows), each trimmed to its own longest row: a batch of mixed short and long texts does not
pay for padding. Measured on CoNLL sentences (int8, 2 threads): 222 sentences/s padded as one batch of 32,
477/s with tolerance 0.1, against 491/s for a global length sort of the whole data set.

A row's answer does not depend on the rows batched with it. Padding with mask 0 is exact, and so is the fp32 graph at
any batch shape. The int8 graph is not, by itself: ONNX Runtime's 8-bit MatMulNBits kernels (int8 compute) take the
flattened [rows x width] activations two rows at a time, and an odd last row goes through a one-row path whose
results differ by up to ~0.1 in a logit. So the same sentence gave different logits alone (odd width) and batched
(even width), and entities flipped with their batch-mates. ``sequence_multiple`` 2 pads every run's width to an even
number: every row then takes the two-row path. Per-token outputs are then bit-identical alone or batched; a pooled
output differs by float32 rounding at most, where the graph's pooling sums over the padded width
(``tests/server/test_batch_invariance.py``).

Outputs of rank 2 (pooled, e.g. sentence embeddings) come back per row; outputs of rank 3 (per token, e.g. NER
logits) come back per request at that request's own sequence length, positions past a row's tokens zero.

Bad input answers only its own request, with INVALID_ARG: token inputs are checked first (ids and mask of one shape,
at least one token, a 0/1 mask, no negative id), and when ONNX Runtime still fails on a batch, its requests are run
one by one so a single bad request (an id past the vocabulary) cannot fail the others batched with it.

Parameters: ``model_filename`` (in the version folder), ``intra_op_threads`` (0 = ORT default),
``sort_by_length`` (true/false), ``padding_tolerance`` (default 0.1), ``max_sub_batch`` (default 64),
``sequence_multiple`` (every run's sequence width rounded up to a multiple with 0 padding, default 1),
``allow_spinning`` (ORT intra-op thread spinning, default 0).

``torch_encoder`` (shipped beside this file where it is used) subclasses this model to run the Hugging Face
checkpoint in PyTorch instead: the GPU profiles of hosts without a CUDA build of ONNX Runtime. The repository's
models never name it: the serving images have no PyTorch.
"""

import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from .parameters import EncoderParameters


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = self.parameters.from_config(config)
        version = Path(args["model_repository"]) / args["model_version"]
        self.input_names = [t["name"] for t in config["input"]]
        self.output_names = [t["name"] for t in config["output"]]
        self.sort = params.sort_by_length and "attention_mask" in self.input_names
        self.padding_tolerance = params.padding_tolerance
        self.max_sub_batch = params.max_sub_batch
        self.multiple = params.sequence_multiple
        self.session = self._open_session(version, params, args)

    runtime = "ONNX Runtime"
    parameters = EncoderParameters

    def _open_session(self, version, params, args):
        """The session whose ``run(output_names, feeds)`` answers a batch."""
        import onnxruntime as ort

        path = version / params.model_filename
        options = ort.SessionOptions()
        options.intra_op_num_threads = params.intra_op_threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Spinning intra-op threads burn the cores that Triton, the tokenizer and the clients need between batches.
        options.add_session_config_entry("session.intra_op.allow_spinning", str(params.allow_spinning))
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        graph_in = {i.name for i in session.get_inputs()}
        graph_out = {o.name for o in session.get_outputs()}
        if set(self.input_names) != graph_in or not set(self.output_names) <= graph_out:
            raise pb_utils.TritonModelException(
                f"{path.name}: config tensors {self.input_names} -> {self.output_names} do not match the ONNX graph's "
                f"{sorted(graph_in)} -> {sorted(graph_out)}; re-run `tritonrepo build`")
        return session

    def _gather(self, requests):
        """Concatenate every request's inputs along the batch axis, right-padding ragged dimensions with 0.
        Returns the feeds and each request's (row count, sequence length)."""
        per_input, sizes = {}, None
        for name in self.input_names:
            arrays = [pb_utils.get_input_tensor_by_name(r, name).as_numpy() for r in requests]
            sizes = sizes or [(len(a), a.shape[1] if a.ndim > 1 else 0) for a in arrays]
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
        return per_input, sizes

    def _sub_batches(self, sorted_lengths):
        """Cut ascending lengths into runs whose padded size stays within the tolerance of their real tokens."""
        start, total = 0, 0
        for i, n in enumerate(sorted_lengths):
            rows = i - start + 1
            if rows > 1 and (rows > self.max_sub_batch or n * rows > (1 + self.padding_tolerance) * (total + n)):
                yield start, i
                start, total = i, 0
            total += n
        yield start, len(sorted_lengths)

    def _round(self, width):
        return -(-width // self.multiple) * self.multiple

    def _run(self, feeds):
        if not self.sort:
            return self.session.run(self.output_names, {k: _to_width(v, self._round(v.shape[1])) if v.ndim > 1 else v
                                                        for k, v in feeds.items()})
        lengths = feeds["attention_mask"].sum(axis=1)
        order = np.argsort(lengths, kind="stable")
        outputs = None
        for start, stop in self._sub_batches(lengths[order]):
            rows = order[start:stop]
            width = self._round(max(int(lengths[rows].max()), 1))
            part = self.session.run(self.output_names, {k: _to_width(v[rows], width) for k, v in feeds.items()})
            full = feeds["attention_mask"].shape[1]
            if outputs is None:  # per-token outputs at the full width: sub-batches are trimmed to their own
                outputs = [np.zeros((len(order), full, *p.shape[2:]), dtype=p.dtype) if p.ndim > 2
                           else np.empty((len(order), *p.shape[1:]), dtype=p.dtype) for p in part]
            for out, p in zip(outputs, part):
                out[rows, : p.shape[1]] = p[:, :full] if p.ndim > 2 else p
        return outputs

    def _check(self, request):
        """Why this request's token inputs cannot be run, or None."""
        if not self.sort:
            return None
        ids, mask = (pb_utils.get_input_tensor_by_name(request, n).as_numpy() for n in ("input_ids", "attention_mask"))
        if ids.shape != mask.shape:
            return f"input_ids {list(ids.shape)} and attention_mask {list(mask.shape)} must have the same shape"
        if ids.shape[1] == 0:
            return "sequences have no tokens (length 0): send at least [CLS] [SEP]"
        if ((mask != 0) & (mask != 1)).any():
            return "attention_mask may hold only 0 and 1"
        if (ids < 0).any():
            return "input_ids may not be negative"
        return None

    def _answer(self, requests):
        feeds, sizes = self._gather(requests)
        outputs = self._run(feeds)
        responses, start = [], 0
        for n, width in sizes:
            responses.append(pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor(name, np.ascontiguousarray(out[start:start + n, :width]) if out.ndim > 2
                                else out[start:start + n])
                for name, out in zip(self.output_names, outputs)
            ]))
            start += n
        return responses

    def execute(self, requests):
        responses = [None] * len(requests)
        runnable = []
        for i, request in enumerate(requests):
            problem = self._check(request)
            if problem:
                responses[i] = _invalid(problem)
            else:
                runnable.append(i)
        try:
            answers = self._answer([requests[i] for i in runnable]) if runnable else []
        except Exception:  # ORT raises its own types: find the request(s) it cannot run, answer the others
            answers = []
            for i in runnable:
                try:
                    answers += self._answer([requests[i]])
                except Exception as e:
                    answers.append(_invalid(f"{self.runtime} cannot run this input: {e}"))
        for i, answer in zip(runnable, answers):
            responses[i] = answer
        return responses


def _to_width(a, width):
    """``a`` [rows, length, ...] cut or right-padded with 0 to ``width``."""
    if a.shape[1] >= width:
        return a[:, :width]
    return np.pad(a, [(0, 0), (0, width - a.shape[1])] + [(0, 0)] * (a.ndim - 2))


def _invalid(message):
    code = getattr(pb_utils.TritonError, "INVALID_ARG", None)
    error = pb_utils.TritonError(message, code) if code is not None else pb_utils.TritonError(message)
    return pb_utils.InferenceResponse(error=error)
