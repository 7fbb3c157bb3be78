"""Triton Python-backend model: UTF-8 strings -> WordPiece ids and attention mask (Hugging Face ``tokenizers``).

Tensors (names from the model's config, which the spec renders): input 0 is BYTES [batch, 1], one text per row;
output 0 the token ids, output 1 the attention mask, both INT64 [rows, L]. All rows of one dynamic batch are padded
to the same L (the longest row, rounded up to ``pad_to_multiple_of``), so the encoder step can batch them.

Parameters: ``max_length`` (tokens, truncation), ``pad_to_multiple_of``, ``max_text_bytes`` (longer texts are
rejected with INVALID_ARG), ``max_chars_per_token`` (default 100). Texts are cut at max_length x max_chars_per_token
characters before tokenizing: a WordPiece token never spans more than 100 characters (longer words become [UNK]), so
the first max_length tokens are unchanged, and a 1 MB text costs ~8 ms instead of ~560 ms of this shared instance.
(Only a text with runs of thousands of blanks could differ from tokenizing it whole.)
Bad input (not UTF-8, over ``max_text_bytes``) fails that request only, with a message naming the row.
The empty string is valid: it encodes to [CLS] [SEP], exactly as sentence-transformers does.
"""

import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils
from tokenizers import Tokenizer


def _error(message):
    code = getattr(pb_utils.TritonError, "INVALID_ARG", None)
    return pb_utils.TritonError(message, code) if code is not None else pb_utils.TritonError(message)


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.max_length = int(params.get("max_length", "256"))
        self.pad_multiple = max(1, int(params.get("pad_to_multiple_of", "1")))
        self.max_text_bytes = int(params.get("max_text_bytes", str(1 << 20)))
        self.max_chars = self.max_length * int(params.get("max_chars_per_token", "100"))
        self.input_name = config["input"][0]["name"]
        self.ids_name, self.mask_name = (o["name"] for o in config["output"][:2])
        path = Path(args["model_repository"]) / args["model_version"] / "tokenizer.json"
        self.tokenizer = Tokenizer.from_file(str(path))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(self.max_length)
        padding = json.loads(path.read_text(encoding="utf-8")).get("padding") or {}
        self.pad_id = int(padding.get("pad_id", 0))

    def _decode(self, rows):
        texts = []
        for i, raw in enumerate(rows):
            if len(raw) > self.max_text_bytes:
                raise ValueError(f"text {i} is {len(raw)} bytes; the limit is {self.max_text_bytes} bytes "
                                 f"(the model reads only its first {self.max_length} tokens): send less text")
            try:
                texts.append(raw.decode("utf-8")[: self.max_chars])
            except UnicodeDecodeError as e:
                raise ValueError(f"text {i} is not valid UTF-8 ({e.reason} at byte {e.start}): "
                                 "send UTF-8 encoded strings") from None
        return texts

    def execute(self, requests):
        responses = [None] * len(requests)
        texts, owners = [], []
        for r, request in enumerate(requests):
            rows = pb_utils.get_input_tensor_by_name(request, self.input_name).as_numpy().reshape(-1)
            try:
                decoded = self._decode(rows)
            except ValueError as e:
                responses[r] = pb_utils.InferenceResponse(error=_error(f"{self.input_name}: {e}"))
                continue
            texts += decoded
            owners.append((r, len(decoded)))
        if texts:
            encodings = self.tokenizer.encode_batch(texts)
            longest = max(len(e.ids) for e in encodings)
            width = -(-longest // self.pad_multiple) * self.pad_multiple
            ids = np.full((len(texts), width), self.pad_id, dtype=np.int64)
            mask = np.zeros((len(texts), width), dtype=np.int64)
            for i, enc in enumerate(encodings):
                ids[i, : len(enc.ids)] = enc.ids
                mask[i, : len(enc.ids)] = 1
            start = 0
            for r, n in owners:
                responses[r] = pb_utils.InferenceResponse(output_tensors=[
                    pb_utils.Tensor(self.ids_name, ids[start:start + n]),
                    pb_utils.Tensor(self.mask_name, mask[start:start + n]),
                ])
                start += n
        return responses
