"""Real text from packaged data (extracted by scripts/setup.sh, never committed)."""

from __future__ import annotations

import re
from pathlib import Path

from .paths import CONLL_DIR, require

_DETOK = [(re.compile(r" ([,.;:!?%)\]}])"), r"\1"), (re.compile(r"([(\[{$]) "), r"\1"),
          (re.compile(r" (n't|'s|'re|'ve|'ll|'d|'m)\b", re.IGNORECASE), r"\1"), (re.compile(r'" (.*?) "'), r'"\1"')]


def detokenize(tokens: list[str]) -> str:
    text = " ".join(tokens)
    for pattern, repl in _DETOK:
        text = pattern.sub(repl, text)
    return text


def conll_sentences(split: str = "test", *, min_tokens: int = 3, unique: bool = True,
                    directory: Path | None = None) -> list[str]:
    """Sentences of a CoNLL-2003 English split (Reuters news), detokenized, in file order."""
    path = require((directory or CONLL_DIR) / f"{split}.txt", f"CoNLL-2003 {split} split")
    sentences, tokens, seen = [], [], set()

    def flush():
        if len(tokens) >= min_tokens:
            text = detokenize(tokens)
            if not unique or text not in seen:
                seen.add(text)
                sentences.append(text)
        tokens.clear()

    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            flush()
        elif not line.startswith("-DOCSTART-"):
            tokens.append(line.split(" ", 1)[0])
    flush()
    return sentences


def short_queries(limit: int = 1000) -> list[str]:
    """Search-query-like texts: CoNLL-2003 test sentences of 3-10 words (headlines, datelines, snippets), every
    other one lowercased as typed queries are."""
    picked = [s for s in conll_sentences("test") if 3 <= len(s.split()) <= 10][:limit]
    return [q if i % 2 else q.lower() for i, q in enumerate(picked)]
