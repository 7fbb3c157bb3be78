"""Query-shaped NER data cut from tagged sentences: spans never cut an entity, casing varies, adjacent entities join."""

import re

import pytest

from tritonrepo.datasets import PASSAGE_SHAPES, entity_spans, keywords, query_shaped, shaped_retrieval

SENTENCES = [
    ("Elon Musk visited the Tesla plant in Gruenheide near Berlin on Monday afternoon .".split(),
     "B-PER I-PER O O B-ORG O O B-LOC O B-LOC O O O O".split()),
    ("The World Health Organization warned of Ebola in West Africa".split(),
     "O B-ORG I-ORG I-ORG O O B-MISC O B-LOC I-LOC".split()),
    ("Shares of Nvidia hit a record high in New York trading".split(),
     "O O B-ORG O O O O O B-LOC I-LOC O".split()),
    ("Mount Etna erupts again".split(), "B-LOC I-LOC O O".split()),
]


def _find(words, source):
    low = [w.lower() for w in source]
    for i in range(len(source) - len(words) + 1):
        if low[i:i + len(words)] == [w.lower() for w in words]:
            return i
    return None


def test_entity_spans_read_iob2():
    assert entity_spans("B-PER I-PER O B-ORG B-ORG I-ORG O I-LOC".split()) == [(0, 2), (3, 4), (4, 6), (7, 8)]


def test_spans_keep_whole_entities_and_vary_casing():
    out = query_shaped(SENTENCES, seed=3)
    n_entities = sum(len(entity_spans(t)) for _, t in SENTENCES)
    spans, adjacent = out[:n_entities], out[n_entities:]
    assert len(adjacent) == 1 and len(spans) == n_entities
    for words, tags in spans:
        assert (2 <= len(words) <= 8) and len(words) == len(tags)
        source_words, source_tags = next((w, t) for w, t in SENTENCES if _find(words, w) is not None)
        at = _find(words, source_words)
        assert tags == source_tags[at:at + len(words)]
        assert not tags[0].startswith("I-")  # the span does not start inside an entity
        after = source_tags[at + len(words)] if at + len(words) < len(source_tags) else "O"
        assert not after.startswith("I-")  # nor end inside one
    assert any(w == [x.lower() for x in w] for w, _ in spans) and any(w != [x.lower() for x in w] for w, _ in spans)
    words, tags = adjacent[0]
    assert 2 <= len(entity_spans(tags)) <= 3 and set(tags) != {"O"} and "O" not in tags


def test_deterministic_per_seed():
    assert query_shaped(SENTENCES, seed=1) == query_shaped(SENTENCES, seed=1)


def test_keyword_queries_drop_stop_words_and_punctuation():
    assert keywords("U.S. stocks rise after Fed cut") == "u.s stocks rise fed"
    assert keywords("SOCCER - JAPAN GET LUCKY WIN, CHINA IN SURPRISE DEFEAT.") == "soccer japan get lucky"


@pytest.mark.parametrize("passages", PASSAGE_SHAPES)
def test_shaped_retrieval_marks_the_passages_of_the_headlines_article(passages):
    items, articles = shaped_retrieval(passages, "keywords"), shaped_retrieval("article", "headline")
    assert len(items.queries) == len(articles.queries) > 200
    for i in range(0, len(items.queries), 10):
        assert items.queries[i] == items.queries[i].lower() and 1 <= len(items.queries[i].split()) <= 4
        bodies = [articles.documents[d] for d in articles.relevant[i]]
        assert items.relevant[i] and all(any(items.documents[d] in b for b in bodies) for d in items.relevant[i])


@pytest.mark.parametrize("passages", PASSAGE_SHAPES)
def test_lead_queries_restate_the_headline_and_no_passage_contains_its_query(passages):
    items, headlines = shaped_retrieval(passages, "lead"), shaped_retrieval(passages, "headline")
    assert len(items.queries) > 0.75 * len(headlines.queries) > 150
    for i in range(0, len(items.queries), 10):
        query = items.queries[i]
        assert len(query.split()) >= 6 and not re.search(r"\d{4}-\d{2}-\d{2}", query)
        assert items.relevant[i] and not any(query in items.documents[d] for d in range(len(items.documents)))


def test_error_breakdown_names_each_kind_of_ner_mistake():
    from tritonrepo.ner_eval import error_breakdown

    data = [("elon musk tesla".split(), ["B-PER", "I-PER", "B-ORG"]),
            ("mount etna eruption".split(), ["B-LOC", "I-LOC", "O"]),
            ("nvidia shares paris".split(), ["B-ORG", "O", "B-LOC"])]
    served = [["B-ORG", "I-ORG", "I-ORG"], ["B-LOC", "O", "B-MISC"], ["B-ORG", "O", "B-PER"]]
    result = error_breakdown(data, served)
    assert result["counts"] == {"wrong boundary": 3, "spurious": 1, "correct": 1, "wrong type": 1}
    wrong_type = {"query": "nvidia shares paris", "gold": ["nvidia (ORG)", "paris (LOC)"],
                  "served": ["nvidia (ORG)", "paris (PER)"]}
    assert result["examples"]["wrong type"] == [wrong_type]
