"""What clients send and receive: the tensors of every served entry model, declared once. The specs (export/<family>.py)
build the models from them and the thin clients (clients/) take their names and types from them; stdlib only, so
a service that installs only the clients imports it too."""

from __future__ import annotations

from .specs import Tensor

SBERT_DIM = 384

# sbert, sbert_int8
TEXT = Tensor(name="TEXT", dtype="BYTES", dims=(1,))
EMBEDDING = Tensor(name="EMBEDDING", dtype="FP32", dims=(SBERT_DIM,))

# ner, ner_int8
QUERY = Tensor(name="QUERY", dtype="BYTES", dims=(1,))
ENTITIES = Tensor(name="ENTITIES", dtype="BYTES", dims=(1,))  # JSON array per query
TRUNCATED = Tensor(name="TRUNCATED", dtype="BOOL", dims=(1,))

# rerank, rerank_int8 (QUERY, PASSAGE -> SCORE)
PASSAGE = Tensor(name="PASSAGE", dtype="BYTES", dims=(1,))
SCORE = Tensor(name="SCORE", dtype="FP32", dims=(1,))

# video_shots (whole files) and video_shots_live (segments of a stream)
VIDEO = Tensor(name="VIDEO", dtype="UINT8", dims=(-1,))  # an encoded file's bytes
RETURN_PROBABILITIES = Tensor(name="RETURN_PROBABILITIES", dtype="BOOL", dims=(1,), optional=True)
SHOTS = Tensor(name="SHOTS", dtype="INT32", dims=(-1, 2))  # start, end frame (inclusive)
SHOT_TIMES = Tensor(name="SHOT_TIMES", dtype="FP32", dims=(-1, 2))  # presentation times of those frames, seconds
FRAME_COUNT = Tensor(name="FRAME_COUNT", dtype="INT32", dims=(1,))
FPS = Tensor(name="FPS", dtype="FP32", dims=(1,))
PROBABILITIES = Tensor(name="PROBABILITIES", dtype="FP32", dims=(-1,))  # per frame, empty unless asked
SEGMENT = Tensor(name="SEGMENT", dtype="UINT8", dims=(-1,))  # one self-contained segment of a live stream
FRAMES_DONE = Tensor(name="FRAMES_DONE", dtype="INT32", dims=(1,))  # frames whose boundary decision is final
