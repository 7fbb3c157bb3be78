"""Triton Python-backend model: UTF-8 strings -> WordPiece ids and attention mask (Hugging Face ``tokenizers``).

Tensors (names from the model's config, which the spec renders): input 0 is BYTES [batch, 1], one text per row;
output 0 the token ids, output 1 the attention mask, both INT64 [rows, L]. The rows of one request are padded to the
same L (its longest row, rounded up to ``pad_to_multiple_of``); L never depends on the other requests of the dynamic
batch, so a request always gives the same tensors (the encoder's response cache relies on it; the encoders batch
requests of different L themselves).

Parameters: ``model_filename`` (the tokenizer, default tokenizer.json), ``max_length`` (tokens, truncation),
``pad_to_multiple_of``, ``max_text_bytes`` (longer texts are rejected with INVALID_ARG), ``max_chars_per_token``
(default 100). Texts are cut at max_length x max_chars_per_token characters before tokenizing: a WordPiece token never spans more than 100 characters (longer words become [UNK]), so
the first max_length tokens are unchanged, and a 1 MB text costs ~8 ms instead of ~560 ms of this shared instance.
(Only a text with runs of thousands of blanks could differ from tokenizing it whole.)
Bad input (not UTF-8, over ``max_text_bytes``) fails that request only, with a message naming the row.
The empty string is valid: it encodes to [CLS] [SEP], exactly as sentence-transformers does.

Pair mode (a config with two inputs, query and passage, e.g. the reranker's): each row is encoded as
``[CLS] query [SEP] passage [SEP]`` by ``pair_encoding`` (shipped beside this file; the query cut to
``max_query_tokens``, default 64, the passage to the rest of ``max_length``), and output 2 is the token types INT64 [rows, L].

Token classification (NER) configs declare three more outputs, in this order: the character offsets INT32
[rows, L, 2] of each token in the original text (Unicode code points, (0, 0) for special and padding tokens), the
token kind INT8 [rows, L] (0 special or padding, 1 first token of a word, 2 continuation), and truncated BOOL
[rows, 1] (the text had more than ``max_length`` tokens; only its start was read). A continuation is decided as the
Hugging Face token-classification pipeline decides it: with a subword prefix ("##"), the token's text differs in
length from the text it covers; without one, the token does not follow a space; [UNK] always starts a word.
"""

import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils
from tokenizers import Tokenizer

from .pair_encoding import encode_pairs
from .parameters import TokenizerParameters


def _error(message):
    code = getattr(pb_utils.TritonError, "INVALID_ARG", None)
    return pb_utils.TritonError(message, code) if code is not None else pb_utils.TritonError(message)


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = TokenizerParameters.from_config(config)
        self.max_length = params.max_length
        self.pad_multiple = max(1, params.pad_to_multiple_of)
        self.max_text_bytes = params.max_text_bytes
        self.input_names = [i["name"] for i in config["input"]]
        self.output_names = [o["name"] for o in config["output"]]
        self.with_offsets = len(self.output_names) == 5
        self.pairs = len(self.input_names) == 2
        self.max_query_tokens = params.max_query_tokens
        self.max_chars_per_token = params.max_chars_per_token
        self.max_chars = self.max_length * self.max_chars_per_token
        path = Path(args["model_repository"]) / args["model_version"] / params.model_filename
        self.tokenizer = Tokenizer.from_file(str(path))
        self.tokenizer.no_padding()
        if self.pairs:  # encode_pairs truncates query and passage itself
            self.tokenizer.no_truncation()
        else:
            self.tokenizer.enable_truncation(self.max_length)
        spec = json.loads(path.read_text(encoding="utf-8"))
        self.pad_id = int((spec.get("padding") or {}).get("pad_id", 0))
        self.subword_prefix = (spec.get("model") or {}).get("continuing_subword_prefix")
        unk = (spec.get("model") or {}).get("unk_token")
        self.unk_id = self.tokenizer.token_to_id(unk) if unk else None

    def _decode(self, rows):
        texts = []
        for i, raw in enumerate(rows):
            if len(raw) > self.max_text_bytes:
                raise ValueError(f"text {i} is {len(raw)} bytes; the limit is {self.max_text_bytes} bytes "
                                 f"(max_text_bytes parameter; the model reads only its first {self.max_length} "
                                 "tokens): send less text")
            try:
                texts.append(raw.decode("utf-8"))
            except UnicodeDecodeError as e:
                raise ValueError(f"text {i} is not valid UTF-8 ({e.reason} at byte {e.start}): "
                                 "send UTF-8 encoded strings") from None
        return texts

    def _read(self, request):
        """Each input's texts of one request (equal row counts in pair mode)."""
        columns = []
        for name in self.input_names:
            rows = pb_utils.get_input_tensor_by_name(request, name).as_numpy().reshape(-1)
            try:
                columns.append(self._decode(rows))
            except ValueError as e:
                raise ValueError(f"{name}: {e}") from None
        if len({len(c) for c in columns}) > 1:
            raise ValueError(f"{' and '.join(self.input_names)} have {[len(c) for c in columns]} rows: send one "
                             "of each per row")
        return columns

    def _encode(self, columns):
        """Token arrays [ids, mask, ...] for the texts of the whole dynamic batch."""
        if self.pairs:
            return list(encode_pairs(self.tokenizer, *columns, max_length=self.max_length, pad_id=self.pad_id,
                                     max_query_tokens=self.max_query_tokens, pad_to_multiple_of=self.pad_multiple,
                                     max_chars_per_token=self.max_chars_per_token))
        texts = columns[0]
        cut = [t[: self.max_chars] for t in texts]
        encodings = self.tokenizer.encode_batch(cut)
        width = -(-max(len(e.ids) for e in encodings) // self.pad_multiple) * self.pad_multiple
        ids = np.full((len(texts), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(texts), width), dtype=np.int64)
        for i, enc in enumerate(encodings):
            ids[i, : len(enc.ids)] = enc.ids
            mask[i, : len(enc.ids)] = 1
        arrays = [ids, mask]
        if self.with_offsets:
            arrays += self._word_info(cut, encodings, width, [len(c) < len(t) for c, t in zip(cut, texts)])
        return arrays

    def execute(self, requests):
        responses = [None] * len(requests)
        columns, owners = [[] for _ in self.input_names], []
        for r, request in enumerate(requests):
            try:
                texts = self._read(request)
            except ValueError as e:
                responses[r] = pb_utils.InferenceResponse(error=_error(str(e)))
                continue
            for column, part in zip(columns, texts):
                column += part
            owners.append((r, len(texts[0])))
        if columns[0]:
            arrays = self._encode(columns)
            lengths = arrays[1].sum(axis=1)
            width = arrays[0].shape[1]
            start = 0
            for r, n in owners:
                longest = int(lengths[start:start + n].max(initial=0))
                w = -(-longest // self.pad_multiple) * self.pad_multiple
                responses[r] = pb_utils.InferenceResponse(output_tensors=[
                    pb_utils.Tensor(name, a[start:start + n, :w] if a.ndim > 1 and a.shape[1] == width  # per token
                                    else a[start:start + n])
                    for name, a in zip(self.output_names, arrays)])
                start += n
        return responses

    def _word_info(self, texts, encodings, width, cut):
        offsets = np.zeros((len(texts), width, 2), dtype=np.int32)
        kinds = np.zeros((len(texts), width), dtype=np.int8)
        truncated = np.zeros((len(texts), 1), dtype=bool)
        for i, (text, enc) in enumerate(zip(texts, encodings)):
            truncated[i, 0] = cut[i] or bool(enc.overflowing)
            for t, (token, token_id, (start, end), special) in enumerate(
                    zip(enc.tokens, enc.ids, enc.offsets, enc.special_tokens_mask)):
                if special:
                    continue
                offsets[i, t] = start, end
                if token_id == self.unk_id:
                    continuation = False
                elif self.subword_prefix:
                    continuation = len(token) != end - start
                else:
                    continuation = start > 0 and " " not in text[start - 1: start + 1]
                kinds[i, t] = 2 if continuation else 1
        return [offsets, kinds, truncated]
