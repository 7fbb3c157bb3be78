"""(query, passage) pairs -> one BERT-style input each: [CLS] query [SEP] passage [SEP] with token types 0/1, the
query cut to ``max_query_tokens`` and the passage to what is left of ``max_length``. The served pair tokenizer and the
reranker's training and validation all encode through this function, so the model sees the same ids everywhere.

Texts are cut at ``max_length`` x ``max_chars_per_token`` characters before tokenizing (a WordPiece token never spans
more than 100 characters): a 1 MB passage costs what its start costs, with the same tokens.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def encode_pairs(tokenizer, queries: Sequence[str], passages: Sequence[str], *, max_length: int,
                 max_query_tokens: int, max_chars_per_token: int = 100, pad_to_multiple_of: int = 1,
                 pad_id: int = 0):
    """A ``tokenizers.Tokenizer`` (truncation and padding off) and equal-length lists of texts -> input_ids,
    attention_mask, token_type_ids as INT64 [rows, L], right-padded with ``pad_id`` to the longest row
    (rounded up to ``pad_to_multiple_of``)."""
    if len(queries) != len(passages):
        raise ValueError(f"{len(queries)} queries for {len(passages)} passages: send one query per passage")
    cut = max_length * max_chars_per_token
    n = len(queries)
    parts = tokenizer.encode_batch([t[:cut] for t in (*queries, *passages)], add_special_tokens=False)
    room = max_length - tokenizer.post_processor.num_special_tokens_to_add(True)
    encodings = []
    for q, p in zip(parts[:n], parts[n:]):
        q.truncate(min(max_query_tokens, room - 1))
        p.truncate(room - len(q.ids))
        encodings.append(tokenizer.post_process(q, p, add_special_tokens=True))
    width = max((len(e.ids) for e in encodings), default=0)
    width = -(-width // pad_to_multiple_of) * pad_to_multiple_of
    ids = np.full((n, width), pad_id, dtype=np.int64)
    mask = np.zeros((n, width), dtype=np.int64)
    types = np.zeros((n, width), dtype=np.int64)
    for i, e in enumerate(encodings):
        ids[i, : len(e.ids)], mask[i, : len(e.ids)], types[i, : len(e.ids)] = e.ids, 1, e.type_ids
    return ids, mask, types
