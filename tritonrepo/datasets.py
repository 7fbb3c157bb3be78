"""Real text from packaged data (extracted by scripts/setup.sh, never committed)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .paths import CONLL_DIR, require

_DETOK = [(re.compile(r" ([,.;:!?%)\]}])"), r"\1"), (re.compile(r"([(\[{$]) "), r"\1"),
          (re.compile(r" (n't|'s|'re|'ve|'ll|'d|'m)\b", re.IGNORECASE), r"\1"), (re.compile(r'" (.*?) "'), r'"\1"')]


def detokenize(tokens: list[str]) -> str:
    text = " ".join(tokens)
    for pattern, repl in _DETOK:
        text = pattern.sub(repl, text)
    return text


Tagged = tuple[list[str], list[str]]  # (words, IOB2 tags)


def iob2(tags: list[str]) -> list[str]:
    """IOB1 -> IOB2: an I- tag that does not continue an entity of its type starts one (B-)."""
    out = []
    for i, tag in enumerate(tags):
        if tag.startswith("I-") and (i == 0 or out[-1][2:] != tag[2:]):
            tag = "B-" + tag[2:]
        out.append(tag)
    return out


def conll_documents(split: str, directory: Path | None = None) -> list[list[Tagged]]:
    """The CoNLL-2003 English reader: the Reuters articles of a split in file order, each a list of sentences
    (words, IOB2 tags). Every other view of the data (tagged sentences, plain sentences, articles) reads this."""
    path = require((directory or CONLL_DIR) / f"{split}.txt", f"CoNLL-2003 {split} split")
    documents: list[list[Tagged]] = [[]]
    words: list[str] = []
    tags: list[str] = []
    for line in [*path.read_text(encoding="utf-8").splitlines(), ""]:
        if line.strip() and not line.startswith("-DOCSTART-"):
            parts = line.split()
            words.append(parts[0])
            tags.append(parts[-1])
            continue
        if words:
            documents[-1].append((words, iob2(tags)))
            words, tags = [], []
        if line.startswith("-DOCSTART-"):
            documents.append([])
    return [d for d in documents if d]


def read_conll(split: str, directory: Path | None = None) -> list[Tagged]:
    """(words, IOB2 tags) per sentence of a CoNLL-2003 English split."""
    return [s for document in conll_documents(split, directory) for s in document]


def lowercased(sentences: list[Tagged]) -> list[Tagged]:
    return [([w.lower() for w in words], tags) for words, tags in sentences]


def conll_sentences(split: str = "test", *, min_tokens: int = 3, unique: bool = True,
                    directory: Path | None = None) -> list[str]:
    """Sentences of a CoNLL-2003 English split (Reuters news), detokenized, in file order."""
    texts = [detokenize(words) for words, _ in read_conll(split, directory) if len(words) >= min_tokens]
    return list(dict.fromkeys(texts)) if unique else texts


def short_queries(limit: int = 1000) -> list[str]:
    """Search-query-like texts: CoNLL-2003 test sentences of 3-10 words (headlines, datelines, snippets), every
    other one lowercased as typed queries are."""
    picked = [s for s in conll_sentences("test") if 3 <= len(s.split()) <= 10][:limit]
    return [q if i % 2 else q.lower() for i, q in enumerate(picked)]


def entity_spans(tags: list[str]) -> list[tuple[int, int]]:
    """[start, end) word ranges of the entities of an IOB2 tag sequence."""
    spans: list[tuple[int, int]] = []
    for i, tag in enumerate(tags):
        if tag.startswith("B-") or (tag.startswith("I-") and (i == 0 or tags[i - 1][2:] != tag[2:])):
            spans.append((i, i + 1))
        elif tag.startswith("I-"):
            spans[-1] = (spans[-1][0], i + 1)
    return spans


def query_shaped(sentences: list[Tagged], *, seed: int = 0) -> list[Tagged]:
    """Search-query-shaped NER examples cut from tagged sentences (words, IOB2 tags), deterministic for a seed:

    - per entity, a span of 2-8 words around it at a random offset, in turn as written, lowercased, or headline
      Title Case; a span never cuts an entity (it is shorter where a neighbour would be cut, longer only for an
      entity of more than 8 words);
    - per fourth sentence, 2-3 entities of other sentences joined without context (``Elon Musk Tesla``), as
      written or lowercased.
    """
    import random

    rng = random.Random(seed)
    cases = (lambda w: w, str.lower, lambda w: w[:1].upper() + w[1:])
    out: list[Tagged] = []
    entities: list[Tagged] = []
    for words, tags in sentences:
        spans = entity_spans(tags)
        entities += [(words[a:b], tags[a:b]) for a, b in spans]
        for a, b in spans:
            length = max(b - a, rng.randint(2, 8))
            start = rng.randint(max(0, b - length), a)
            end = min(len(words), start + length)
            for x, y in spans:  # a cut inside another entity moves off it, away from this one
                if x < start < y:
                    start = y
                if x < end < y:
                    end = x
            case = cases[len(out) % 3]
            out.append(([case(w) for w in words[start:end]], tags[start:end]))
    for i in range(0, len(sentences), 4):
        if len(entities) < 3:
            break
        picked = rng.sample(entities, rng.randint(2, 3))
        words = [w for ws, _ in picked for w in ws]
        tags = [("B-" if j == 0 else "I-") + t[2:] for _, ts in picked for j, t in enumerate(ts)]
        out.append((words if i % 8 else [w.lower() for w in words], tags))
    return out


def conll_articles(split: str = "test", directory: Path | None = None) -> list[list[str]]:
    """The Reuters articles of a CoNLL-2003 split, each a list of detokenized sentences (the first is mostly the
    headline)."""
    return [[detokenize(words) for words, _ in document] for document in conll_documents(split, directory)]


def sample_manifest(out: Path, *, documents: int = 200, captions: int = 200, videos: bool = True,
                    duplicates: int = 20) -> tuple[Path, int]:
    """An ingestion manifest of real packaged data in ``out``: Reuters articles as text files (paragraphs of three
    sentences), headlines as inline captions, the packaged video clips, ``duplicates`` assets repeating another's
    content, and one asset of each bad kind (non-UTF-8 text, a missing file, bytes that are not a video)."""
    import json
    import shutil

    from .paths import VIDEO_DIR

    out = Path(out)
    (out / "docs").mkdir(parents=True, exist_ok=True)
    articles = conll_articles("test")
    rows = []
    for i, article in enumerate(articles[:documents]):
        text = "\n\n".join(" ".join(article[j:j + 3]) for j in range(0, len(article), 3))
        (out / "docs" / f"doc{i:04d}.txt").write_text(text, encoding="utf-8")
        rows.append({"id": f"doc{i:04d}", "kind": "text", "uri": f"docs/doc{i:04d}.txt"})
    headlines = [a[0] for a in conll_articles("train")[:captions]]
    rows += [{"id": f"caption{i:04d}", "kind": "text", "text": h} for i, h in enumerate(headlines)]
    if videos:  # copied beside the manifest: ingestion reads local files only inside the manifest's folder
        (out / "videos").mkdir(exist_ok=True)
        for p in (VIDEO_DIR / "bikes.mp4", VIDEO_DIR / "carphone_pristine.mp4"):
            if p.exists():
                shutil.copyfile(p, out / "videos" / p.name)
                rows.append({"id": p.stem, "kind": "video", "uri": f"videos/{p.name}"})
    originals = list(rows)
    rows += [{**originals[(i * 7) % len(originals)], "id": f"dup{i:04d}"} for i in range(duplicates)]
    (out / "docs" / "latin1.txt").write_bytes("Zürich café résumé".encode("latin-1"))
    (out / "docs" / "not_a_video.mp4").write_bytes(b"this is not a video\n" * 100)
    rows += [{"id": "bad-latin1", "kind": "text", "uri": "docs/latin1.txt"},
             {"id": "bad-missing", "kind": "text", "uri": "docs/missing.txt"},
             {"id": "bad-video", "kind": "video", "uri": "docs/not_a_video.mp4"}]
    path = out / "manifest.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path, len(rows)


@dataclass(frozen=True)
class KnownItems:
    """Headline -> article retrieval over Reuters articles: each query is an article's headline, each document an
    article's body (dateline and text, headline removed). ``relevant[i]`` holds the documents whose headline equals
    query i's (case and spacing ignored): usually its own article, every copy when a headline repeats."""

    queries: list[str]
    documents: list[str]
    relevant: list[frozenset[int]]


def _norm(headline: str) -> str:
    return " ".join(headline.lower().split())


def headline_retrieval(query_split: str = "test", corpus_splits: tuple[str, ...] = ("test", "valid"),
                       directory: Path | None = None) -> KnownItems:
    """Queries from one CoNLL-2003 split's headlines, documents from the bodies of ``corpus_splits`` (which must
    include ``query_split``). Articles without a body are left out."""
    if query_split not in corpus_splits:
        raise ValueError(f"query split {query_split!r} must be one of the corpus splits {corpus_splits}")
    heads, docs = [], []
    for split in corpus_splits:
        for article in conll_articles(split, directory):
            if len(article) > 1:
                heads.append((split, _norm(article[0]), article[0]))
                docs.append(" ".join(article[1:]))
    by_head: dict[str, set[int]] = {}
    for i, (_, norm, _) in enumerate(heads):
        by_head.setdefault(norm, set()).add(i)
    picked = [(text, frozenset(by_head[norm])) for split, norm, text in heads if split == query_split]
    return KnownItems(queries=[q for q, _ in picked], documents=docs, relevant=[r for _, r in picked])


PASSAGE_SHAPES = ("article", "paragraph", "sentence")
QUERY_SHAPES = ("headline", "keywords", "lead")
_STOP = frozenset("a an and are as at be by for from has have in is it its of on or that the to was were will with "
                  "after over says said new us vs".split())
_DATELINE = re.compile(r"\b\d{4}-\d{2}-\d{2}\b")


def keywords(headline: str, limit: int = 4) -> str:
    """A typed keyword query from a headline: lowercased, punctuation and stop words dropped, its first ``limit``
    content words (``U.S. stocks rise after Fed cut`` -> ``u.s stocks rise fed``)."""
    words = [w.strip(".,:;!?'\"()-").lower() for w in headline.split()]
    return " ".join([w for w in words if w and w not in _STOP and any(c.isalnum() for c in w)][:limit])


def lead(body: list[str]) -> int | None:
    """Index of an article body's lead: its first sentence of 6+ words that starts with a capital or digit, ends with a
    full stop and is not a dateline. The lead restates the headline in other words: the paraphrased-headline query
    shape."""
    return next((i for i, s in enumerate(body) if len(s.split()) >= 6 and (s[0].isupper() or s[0].isdigit())
                 and s.endswith(".") and not _DATELINE.search(s)), None)


def cut_passages(body: list[str], shape: str) -> list[str]:
    """An article body as the passages of one shape: the whole body (``article``), runs of three sentences
    (``paragraph``) or its sentences of 5+ words (``sentence``)."""
    if shape == "article":
        return [" ".join(body)]
    if shape == "paragraph":
        return [" ".join(body[i:i + 3]) for i in range(0, len(body), 3)]
    return [s for s in body if len(s.split()) >= 5]


def shaped_retrieval(passages: str, queries: str, query_split: str = "test",
                     corpus_splits: tuple[str, ...] = ("test", "valid"), directory: Path | None = None) -> KnownItems:
    """Headline -> article retrieval cut into the shapes a search service indexes and receives. ``passages``: see
    ``cut_passages``; ``queries``: the headline as written, as ``keywords``, or the article's ``lead`` sentence (a
    paraphrase of the headline; it is then removed from every article's body, so no passage contains its query). A
    passage is relevant to a query when it comes from an article with that headline (case and spacing ignored).
    Queries that come out empty are left out."""
    if passages not in PASSAGE_SHAPES or queries not in QUERY_SHAPES:
        raise ValueError(f"shapes {passages!r}/{queries!r}: passages one of {PASSAGE_SHAPES}, queries one of "
                         f"{QUERY_SHAPES}")
    docs: list[str] = []
    by_head: dict[str, set[int]] = {}
    picked: list[tuple[str, str]] = []
    for split in corpus_splits:
        for article in conll_articles(split, directory):
            head, body = article[0], article[1:]
            if not body:
                continue
            query = head if queries == "headline" else keywords(head) if queries == "keywords" else ""
            if queries == "lead" and (i := lead(body)) is not None:
                query, body = body[i], body[:i] + body[i + 1:]
            cut = [p for p in cut_passages(body, passages) if p]
            by_head.setdefault(_norm(head), set()).update(range(len(docs), len(docs) + len(cut)))
            docs += cut
            if split == query_split and query:
                picked.append((query, _norm(head)))
    chosen = [(q, frozenset(by_head[norm])) for q, norm in picked if by_head[norm]]
    return KnownItems(queries=[q for q, _ in chosen], documents=docs, relevant=[r for _, r in chosen])
