"""One query, one answer: every served text model answers a text inside mixed dynamic batches under load as it answers
it alone, fp32 and int8 (ensembles/onnx_encoder.py says why the int8 graphs need an even width), and so do the
TransNetV2 encoders for a window of real video. Entities, rerank scores and shot probabilities are bit-identical.
Embeddings differ by float32 rounding at most: the graph's mean pooling sums over the padded width, whose length
depends on the batch (measured: 4.5e-8 at most, vectors of norm 1)."""

from __future__ import annotations

import pytest

from tritonrepo.perf import invariance

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def texts():
    return invariance.inputs(48)


@pytest.fixture(scope="module")
def windows():
    return invariance.windows(16)


@pytest.mark.parametrize("model", invariance.MODELS)
def test_answers_do_not_depend_on_batch_mates(triton, texts, windows, model):
    video = model in invariance.VIDEO_MODELS
    row = invariance.measure(triton.grpc_url, model, windows if video else texts, rounds=1 if video else 2,
                             concurrency=16)
    assert row["mean_batch_alone"] == 1.0
    assert row["mean_batch_mixed"] > 1.5, f"no mixed batches formed: {row}"
    if model.startswith("sbert"):
        assert row["max_abs_diff"] <= 1e-6, row
    else:
        assert row["changed"] == 0, f"{row['changed']} of {row['answers']} answers changed with their batch-mates: {row}"
