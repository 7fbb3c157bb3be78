"""A search service installs the client alone: `pip install tritonrepo` (its base dependencies: no torch, transformers,
ONNX Runtime, tokenizers, DALI, BM25/faiss or captioning packages) in a fresh venv, then calls the served models."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tritonrepo.clients import EmbeddingClient, NerClient, RerankClient

pytestmark = pytest.mark.server

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "transformers", "sentence_transformers", "onnxruntime", "tokenizers", "av", "nvidia", "bm25s",
         "faiss", "PIL", "ray", "tensorflow", "seqeval")  # aiohttp comes with tritonclient[http]
QUERY, PASSAGES = "oil prices opec", ["Oil prices fell as OPEC output rose.", "The striker scored twice in the final."]
SCRIPT = """
import importlib.util, json, sys
from tritonrepo.clients import EmbeddingClient, NerClient, RerankClient
url, heavy, query, passages = sys.argv[1], sys.argv[2].split(","), sys.argv[3], sys.argv[4:]
with EmbeddingClient(url, "sbert_int8") as e, NerClient(url, "ner_int8") as n, RerankClient(url, "rerank_int8") as r:
    out = {"embedding": e.embed([query])[0].tolist(), "entities": [[x.type, x.text] for x in n.entities(passages)[0]],
           "scores": r.scores(query, passages).tolist()}
out["installed"] = [p for p in heavy if importlib.util.find_spec(p)]
out["imported"] = sorted({m.split(".")[0] for m in sys.modules} & set(heavy))
print(json.dumps(out))
"""


def test_the_client_installed_alone_calls_the_served_models(triton, tmp_path):
    source, venv = tmp_path / "source", tmp_path / "venv"  # a copy: the build writes build/ beside the sources
    for name in ("tritonrepo", "export", "ensembles", "clients", "services", "perf"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "results"))
    shutil.copy(ROOT / "pyproject.toml", source)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check", str(source)],
                   check=True, timeout=600)
    done = subprocess.run([str(venv / "bin" / "python"), "-c", SCRIPT, triton.grpc_url, ",".join(HEAVY), QUERY,
                           *PASSAGES], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["installed"] == [] and got["imported"] == []
    with EmbeddingClient(triton.grpc_url, "sbert_int8") as e, NerClient(triton.grpc_url, "ner_int8") as n, \
            RerankClient(triton.grpc_url, "rerank_int8") as r:
        np.testing.assert_allclose(got["embedding"], e.embed([QUERY])[0], atol=1e-6)
        assert got["entities"] == [[x.type, x.text] for x in n.entities(PASSAGES)[0]]
        np.testing.assert_allclose(got["scores"], r.scores(QUERY, PASSAGES), atol=1e-5)
