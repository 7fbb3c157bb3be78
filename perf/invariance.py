"""Batch invariance under load: a model's answer to each input sent alone, against its answers to the same input
inside mixed dynamic batches (inputs of other lengths in flight at once, in a new order every round). Text models
take real queries and sentences; the TransNetV2 encoders take 100-frame windows of the packaged real clips.

A search service caches and compares answers per query, so one query must get one answer whatever it is batched with.
Per model: how many answers changed (entities: type or span; embeddings and scores: any bit), the largest difference
of a score or embedding component, and the encoder's mean batch alone and mixed (proof that batches formed).
``tritonrepo perf invariance`` prints the table and writes JSON; tests/server/test_batch_invariance.py holds every text
model to bit-identical answers.
"""

from __future__ import annotations

import asyncio
import random

import numpy as np

from tritonrepo.export.families import spec
from tritonrepo.export.transnetv2 import TRANSNET_PROBS, TRANSNET_WINDOW
from tritonrepo.clients import AsyncEmbeddingClient, AsyncNerClient, AsyncRerankClient
from tritonrepo.datasets import conll_sentences, short_queries
from tritonrepo.paths import TRANSNET_DIR, VIDEO_DIR

from .provenance import provenance, write_result

TEXT_MODELS = ("ner", "ner_int8", "sbert", "sbert_int8", "rerank", "rerank_int8")
VIDEO_MODELS = ("transnetv2", "transnetv2_int8")
MODELS = TEXT_MODELS + VIDEO_MODELS


def inputs(count: int) -> list[str]:
    """Short search queries (half lowercased) and whole news sentences of up to 60 words, interleaved."""
    long = [s for s in conll_sentences("test") if 12 <= len(s.split()) <= 60][: count - count // 2]
    short = short_queries(count // 2)
    return [t for pair in zip(short, long) for t in pair] + short[len(long):] + long[len(short):]


def windows(count: int) -> list[np.ndarray]:
    """``count`` 100-frame RGB 48x27 windows of test.mp4, then bikes.mp4, cut as video_shots cuts them."""
    from tritonrepo.ensembles.shot_tracker import ShotTracker
    from tritonrepo.ensembles.video_io import decode_file

    out: list[np.ndarray] = []
    for path in (TRANSNET_DIR / "test.mp4", VIDEO_DIR / "bikes.mp4"):
        tracker = ShotTracker()
        out += tracker.push(decode_file(path)) + tracker.finish()
        if len(out) >= count:
            break
    return out[:count]


class _WindowClient:
    """A served TransNetV2 encoder called with one window a request, at most ``concurrency`` in flight."""

    def __init__(self, url: str, model: str, concurrency: int):
        import tritonclient.grpc.aio as aio

        self.client, self.model, self.slots = aio.InferenceServerClient(url), model, asyncio.Semaphore(concurrency)

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.client.close()

    async def probs(self, window: np.ndarray) -> np.ndarray:
        import tritonclient.grpc.aio as aio

        frames = aio.InferInput(TRANSNET_WINDOW.name, [1, *window.shape], "UINT8")
        frames.set_data_from_numpy(window[None])
        async with self.slots:
            result = await self.client.infer(self.model, [frames])
        return result.as_numpy(TRANSNET_PROBS.name)[0]


def _asker(model: str, url: str, concurrency: int):
    """(client, ask): ask(client, input) -> (discrete answer or None, float vector)."""
    if model in VIDEO_MODELS:
        async def ask(client, window):
            return None, await client.probs(window)
        return _WindowClient(url, model, concurrency), ask
    family = model.split("_")[0]
    if family == "ner":
        async def ask(client, text):
            (found,) = await client.entities([text])
            return tuple((e.type, e.start, e.end) for e in found), np.array([e.score for e in found])
        return AsyncNerClient(url, model, max_in_flight=concurrency), ask
    if family == "sbert":
        async def ask(client, text):
            return None, (await client.embed([text]))[0]
        return AsyncEmbeddingClient(url, model, max_in_flight=concurrency), ask
    if family == "rerank":  # the query: the text's first 4 words; the passage: the text
        async def ask(client, text):
            return None, await client.scores(" ".join(text.split()[:4]), [text])
        return AsyncRerankClient(url, model, max_in_flight=concurrency), ask
    raise ValueError(f"{model}: batch invariance is measured for {list(MODELS)}")


def _batching(url: str, model: str) -> tuple[int, int]:
    """(inferences, executions) so far of the ensemble's encoder step."""
    import tritonclient.grpc as grpcclient

    encoder = model if model in VIDEO_MODELS else next(s.model for s in spec(model).steps
                                                       if "_encoder" in s.model)
    stats = grpcclient.InferenceServerClient(url).get_inference_statistics(encoder, as_json=True)["model_stats"][0]
    return int(stats.get("inference_count", 0)), int(stats.get("execution_count", 0))


def _mean_batch(before: tuple[int, int], after: tuple[int, int]) -> float:
    runs = after[1] - before[1]
    return round((after[0] - before[0]) / runs, 2) if runs else 0.0


def measure(url: str, model: str, texts: list, *, rounds: int = 3, concurrency: int = 16, seed: int = 0) -> dict:
    """Every input alone (one request in flight), then ``rounds`` times all of them at once in a shuffled order with
    ``concurrency`` requests in flight; each mixed answer compared with the input's answer alone."""
    async def run():
        client, ask = _asker(model, url, concurrency)
        async with client:
            t0 = _batching(url, model)
            alone = [await ask(client, t) for t in texts]
            t1 = _batching(url, model)
            mixed, rng = [], random.Random(seed)
            for _ in range(rounds):
                order = rng.sample(range(len(texts)), len(texts))
                answers = await asyncio.gather(*(ask(client, texts[i]) for i in order))
                mixed += list(zip(order, answers))
            return alone, mixed, (t0, t1, _batching(url, model))

    alone, mixed, (t0, t1, t2) = asyncio.run(run())
    changed = flips = 0
    worst = 0.0
    for i, (key, vector) in mixed:
        ref_key, ref_vector = alone[i]
        if key != ref_key:
            flips += 1
        elif vector.shape == ref_vector.shape and len(vector):
            worst = max(worst, float(np.abs(vector - ref_vector).max()))
        changed += key != ref_key or not np.array_equal(vector, ref_vector)
    row = {"model": model, "texts": len(texts), "rounds": rounds, "concurrency": concurrency, "answers": len(mixed),
           "changed": changed, "changed_rate": round(changed / len(mixed), 4), "max_abs_diff": worst,
           "mean_batch_alone": _mean_batch(t0, t1), "mean_batch_mixed": _mean_batch(t1, t2)}
    if alone[0][0] is not None:
        row["entity_flips"] = flips
        row["entity_flip_rate"] = round(flips / len(mixed), 4)
    return row


def run(url: str, *, model_names=MODELS, texts: int = 200, rounds: int = 3, concurrency: int = 16,
        label: str = "", out=None, windows_count: int = 48) -> dict:
    data = {"text": inputs(texts), "video": windows(windows_count)}
    rows = [measure(url, m, data["video" if m in VIDEO_MODELS else "text"], rounds=rounds, concurrency=concurrency)
            for m in model_names]
    result = {"what": "answers alone vs inside mixed dynamic batches, per served model", "label": label,
              "rows": rows, "provenance": provenance()}
    return write_result(result, "batch-invariance", out)


def table(result: dict):
    from rich.table import Table

    t = Table(title="Batch invariance: the same input alone vs inside mixed batches under load")
    cols = ("model", "answers", "changed", "entity_flips", "max_abs_diff", "mean_batch_alone", "mean_batch_mixed")
    for c in cols:
        t.add_column(c, justify="right")
    for r in result["rows"]:
        t.add_row(*(str(r.get(c, "-")) for c in cols))
    return t
