"""Triton Python-backend model: token logits -> entities with type, score and character offsets in the query.

Inputs (names from the config, in this order): the query BYTES [rows, 1], logits FP32 [rows, L, labels], token
offsets INT32 [rows, L, 2] and token kinds INT8 [rows, L] from the tokenizer step (0 special/padding, 1 word start,
2 continuation). Output: BYTES [rows, 1], one JSON array per query:

    [{"type": "PER", "score": 0.998, "start": 0, "end": 12, "text": "Taylor Swift"}, ...]

``start``/``end`` index the original query in Unicode code points (Python ``str`` slicing), ``text`` is
``query[start:end]`` (original case and spacing), ``score`` the mean of the entity's token (or word) probabilities.

Decoding follows the Hugging Face token-classification pipeline: softmax per token; ``simple`` labels each token by
its argmax, ``first`` / ``average`` / ``max`` first label whole words (first token's label, mean of the tokens'
probabilities, or the most confident token's label); then IOB2 grouping: a B- tag or a change of type starts an
entity, I- of the same type continues it, O ends it. ``viterbi`` (not in the pipeline) takes each word's first-token
probabilities, as ``first`` does, and labels the words with the most probable sequence that is valid IOB2 (an I-X
only after B-X or I-X), so a type change inside a name (``B-PER I-ORG``) or an entity opened by I- is resolved by the
whole query instead of word by word. A sequence scores the sum of its labels' log probabilities plus, when the
labels file has them, the training data's log probabilities of its first label and of each label given the one
before (label bigrams, as an HMM scores transitions): ``Salem Bitar`` then stays one name rather than two. Labels come
from ``labels.json`` in the version folder: the trained model's id2label as a list, or an object with ``labels``,
``start_logp`` [labels] and ``transition_logp`` [labels, labels] (previous -> next). The strategy is the config
parameter ``aggregation_strategy`` (the repository sets a word-level one, so no entity starts or ends inside a word;
``simple`` when unset), or per request the request parameter of that name.

Limits (config parameters), for clients that call this step directly: ``max_text_bytes`` per query (default 1 MiB,
the tokenizer's) and ``max_tokens`` token positions per row (default 128, the tokenizer's max_length). A request over
one gets INVALID_ARG naming the parameter.
"""

import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from .parameters import DecoderParameters

STRATEGIES = ("simple", "first", "average", "max", "viterbi")


def _error(message):
    code = getattr(pb_utils.TritonError, "INVALID_ARG", None)
    return pb_utils.TritonError(message, code) if code is not None else pb_utils.TritonError(message)


def split_tag(label):
    if label.startswith(("B-", "I-")):
        return label[0], label[2:]
    return "I", label  # "O" or a tag without a prefix continues a run of the same tag


def best_iob2_path(probs, labels, start_logp=None, transition_logp=None):
    """Label indices, one per row of ``probs`` [words, labels], of the valid IOB2 sequence with the largest sum of
    log probabilities, plus ``start_logp`` [labels] of its first label and ``transition_logp`` [previous, next] of
    each pair when given (Viterbi; an I-X may follow only B-X or I-X and cannot start the query)."""
    n = len(labels)
    inside = np.array([label.startswith("I-") for label in labels])
    types = [split_tag(label)[1] if label.startswith(("B-", "I-")) else None for label in labels]
    follows = np.array([[not inside[j] or (types[i] is not None and types[i] == types[j]) for j in range(n)]
                        for i in range(n)])  # follows[i, j]: label j may come right after label i
    start = np.zeros(n) if start_logp is None else np.asarray(start_logp, dtype=np.float64)
    step = np.zeros((n, n)) if transition_logp is None else np.asarray(transition_logp, dtype=np.float64)
    barred = np.where(follows, step, -np.inf)
    logp = np.log(np.maximum(probs, 1e-30))
    score, back = np.where(inside, -np.inf, logp[0] + start), []
    for row in logp[1:]:
        candidates = score[:, None] + barred
        back.append(candidates.argmax(axis=0))
        score = candidates.max(axis=0) + row
    path = [int(score.argmax())]
    for pointers in reversed(back):
        path.append(int(pointers[path[-1]]))
    return path[::-1]


def decode(text, logits, offsets, kinds, labels, strategy="simple", start_logp=None, transition_logp=None):
    """Entities of one query (see the module docstring; the log probabilities are ``viterbi``'s label bigrams)."""
    keep = kinds > 0
    if not keep.any():
        return []
    z = logits[keep].astype(np.float64)
    z -= z.max(axis=-1, keepdims=True)
    probs = np.exp(z)
    probs /= probs.sum(axis=-1, keepdims=True)
    spans = offsets[keep]
    if strategy == "simple":
        units = [(int(p.argmax()), float(p.max()), int(s), int(e)) for p, (s, e) in zip(probs, spans)]
    else:
        starts = np.flatnonzero(kinds[keep] != 2)
        if not len(starts) or starts[0] != 0:
            starts = np.concatenate([[0], starts])
        bounds = [(int(spans[a][0]), int(spans[b - 1][1])) for a, b in zip(starts, list(starts[1:]) + [len(probs)])]
        words = np.array([word.mean(axis=0) if strategy == "average" else word[word.max(axis=1).argmax()]
                          if strategy == "max" else word[0] for word in np.split(probs, starts[1:])])
        path = (best_iob2_path(words, labels, start_logp, transition_logp) if strategy == "viterbi" else
                words.argmax(axis=1))
        units = [(int(label), float(p[label]), start, end) for label, p, (start, end) in zip(path, words, bounds)]

    entities, run = [], []

    def close():
        tag = split_tag(labels[run[0][0]])[1]
        if tag != "O":
            start, end = run[0][2], run[-1][3]
            entities.append({"type": tag, "score": round(float(np.mean([u[1] for u in run])), 6),
                             "start": start, "end": end, "text": text[start:end]})

    for unit in units:
        if run:
            bi, tag = split_tag(labels[unit[0]])
            if tag == split_tag(labels[run[-1][0]])[1] and bi != "B":
                run.append(unit)
                continue
            close()
        run = [unit]
    if run:
        close()
    return entities


def read_labels(path):
    """(labels, start_logp or None, transition_logp or None) from a labels file (see the module docstring)."""
    found = json.loads(path.read_text(encoding="utf-8"))
    if isinstance(found, list):
        return found, None, None
    labels = found["labels"]
    start, transition = np.array(found["start_logp"], dtype=np.float64), np.array(found["transition_logp"],
                                                                                   dtype=np.float64)
    if start.shape != (len(labels),) or transition.shape != (len(labels), len(labels)):
        raise ValueError(f"{path}: start_logp {list(start.shape)} and transition_logp {list(transition.shape)} must "
                         f"be [{len(labels)}] and [{len(labels)}, {len(labels)}] for {len(labels)} labels")
    return labels, start, transition


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = DecoderParameters.from_config(config)
        self.strategy = params.aggregation_strategy
        if self.strategy not in STRATEGIES:
            raise pb_utils.TritonModelException(f"aggregation_strategy {self.strategy!r}: one of {STRATEGIES}")
        path = Path(args["model_repository"]) / args["model_version"] / params.model_filename
        self.labels, self.start_logp, self.transition_logp = read_labels(path)
        self.input_names = [t["name"] for t in config["input"]]
        self.output_name = config["output"][0]["name"]
        self.max_text_bytes = params.max_text_bytes
        self.max_tokens = params.max_tokens

    def _strategy(self, request):
        try:
            params = json.loads(request.parameters() or "{}")
        except (AttributeError, ValueError):
            params = {}
        strategy = params.get("aggregation_strategy", self.strategy)
        if strategy not in STRATEGIES:
            raise ValueError(f"request parameter aggregation_strategy={strategy!r}: use one of {list(STRATEGIES)}")
        return strategy

    def _check(self, queries, logits, offsets, kinds):
        """Why the step inputs do not line up (they come from the tokenizer and encoder steps; a direct caller can
        send anything), or None."""
        rows, width = logits.shape[0], logits.shape[1] if logits.ndim == 3 else -1
        if logits.ndim != 3 or logits.shape[2] != len(self.labels):
            return f"logits {list(logits.shape)} must be [rows, tokens, {len(self.labels)}]"
        if width > self.max_tokens:
            return (f"logits have {width} token positions; the limit is {self.max_tokens} (max_tokens parameter, the "
                    "tokenizer's max_length)")
        for i, raw in enumerate(queries):
            if len(raw) > self.max_text_bytes:
                return (f"QUERY: text {i} is {len(raw)} bytes; the limit is {self.max_text_bytes} bytes "
                        "(max_text_bytes parameter)")
        if offsets.shape != (rows, width, 2) or kinds.shape != (rows, width) or len(queries) != rows:
            return (f"QUERY {len(queries)} rows, logits {list(logits.shape)}, offsets {list(offsets.shape)} and "
                    f"token_kind {list(kinds.shape)} do not line up")
        return None

    def _decode_request(self, queries, logits, offsets, kinds, strategy):
        out = np.empty((len(queries), 1), dtype=np.object_)
        for i in range(len(queries)):
            try:
                query = queries[i].decode("utf-8")
            except UnicodeDecodeError as e:  # the tokenizer step rejects these; a direct caller may not
                raise ValueError(f"QUERY: text {i} is not valid UTF-8 ({e.reason} at byte {e.start})") from None
            found = decode(query, logits[i], offsets[i], kinds[i], self.labels, strategy, self.start_logp,
                           self.transition_logp)
            out[i, 0] = json.dumps(found, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        return out

    def execute(self, requests):
        responses = []
        for request in requests:
            text, logits, offsets, kinds = (pb_utils.get_input_tensor_by_name(request, n).as_numpy()
                                            for n in self.input_names)
            queries = text.reshape(-1)
            try:
                strategy = self._strategy(request)
                problem = self._check(queries, logits, offsets, kinds)
                if problem:
                    raise ValueError(problem)
                out = self._decode_request(queries, logits, offsets, kinds, strategy)
            except ValueError as e:
                responses.append(pb_utils.InferenceResponse(error=_error(str(e))))
                continue
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(self.output_name, out)]))
        return responses
