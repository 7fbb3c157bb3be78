"""The ``torch_encoder`` Python model (the encoder of the GPU profiles, perf/gpu_profile.py), served by the real
tritonserver on the CPU with the real all-MiniLM-L6-v2 weights: its embeddings against sentence-transformers' (the
SBERT export's reference requests), in fp32 and in the fp16 the GPU profiles run; and its refusals."""

import dataclasses
import shutil

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tokenizers import Tokenizer
from tritonclient.utils import InferenceServerException

from tritonrepo import render
from tritonrepo.export import families
from tritonrepo.export.sbert import SBERT_MAX_TOKENS
from tritonrepo.paths import SBERT_WEIGHTS
from tritonrepo.repository import install_python_module
from tritonrepo.server import TritonServer
from tritonrepo.validate import load_reference

pytestmark = pytest.mark.server


def _encoder(repo, name: str, weights: bool, **params: str) -> None:
    spec = families.spec("sbert_encoder")
    cpu = spec.deployment("cpu")
    single = dataclasses.replace(cpu.batching, max_queue_size=0)  # one instance: no queue bound (ONE_INSTANCE_QUEUE)
    deployment = dataclasses.replace(cpu, count=1, batching=single, parameters=(
        ("torch_head", "mean_pool_l2"), ("sort_by_length", "true"), *params.items()))
    spec = dataclasses.replace(spec, name=name, python_model="torch_encoder",
                               deployments=spec.deployments | {"cpu": deployment})
    (repo / name / "configs").mkdir(parents=True)
    (repo / name / "configs" / "cpu.pbtxt").write_text(render.to_text(render.model_config(spec, "cpu"), "cpu"))
    version = repo / name / "1"
    install_python_module(version, "torch_encoder")
    (version / "checkpoint").mkdir()
    shutil.copy(SBERT_WEIGHTS / "config.json", version / "checkpoint")
    if weights:
        (version / "checkpoint" / "model.safetensors").symlink_to(SBERT_WEIGHTS / "model.safetensors")


@pytest.fixture(scope="module")
def torch_server(model_repository, tmp_path_factory):
    repo = tmp_path_factory.mktemp("torch_runtime")
    _encoder(repo, "torch_fp32", True, torch_dtype="float32")
    _encoder(repo, "torch_fp16", True, torch_dtype="float16")
    _encoder(repo, "torch_random", False, torch_dtype="float32", random_weights="true")
    with TritonServer(repo, model_config_name="cpu", explicit_models=["torch_fp32", "torch_fp16", "torch_random"],
                      log_file=repo / "tritonserver.log") as server:
        yield server, repo


def _embed(client, model: str, texts: list[str], tokenizer: Tokenizer) -> np.ndarray:
    """One request per text (the dynamic batcher packs them ragged), as sbert_tokenizer hands them over."""
    out = []
    for e in tokenizer.encode_batch(texts):
        ids, mask = (np.array([v], dtype=np.int64) for v in (e.ids, e.attention_mask))
        inputs = [grpcclient.InferInput("input_ids", ids.shape, "INT64"),
                  grpcclient.InferInput("attention_mask", mask.shape, "INT64")]
        inputs[0].set_data_from_numpy(ids)
        inputs[1].set_data_from_numpy(mask)
        out.append(client.infer(model, inputs).as_numpy("sentence_embedding")[0])
    return np.stack(out)


def test_pytorch_runtime_reproduces_sentence_transformers_in_fp32_and_fp16(torch_server, model_repository):
    server, _ = torch_server
    tokenizer = Tokenizer.from_file(str(model_repository / "sbert_tokenizer" / "1" / "tokenizer.json"))
    tokenizer.enable_truncation(SBERT_MAX_TOKENS)
    _, pairs = load_reference(model_repository / "sbert" / "1" / "reference.npz")
    texts = [t.decode() for request, _ in pairs for t in request["TEXT"].reshape(-1)]
    expected = np.concatenate([answer["EMBEDDING"] for _, answer in pairs])
    client = grpcclient.InferenceServerClient(server.grpc_url)
    cosines = {}
    for model in ("torch_fp32", "torch_fp16"):
        got = _embed(client, model, texts, tokenizer)
        cosines[model] = float((got * expected).sum(1).min())  # both sides are L2-normalised
    print(f"min cosine to sentence-transformers over {len(texts)} texts: {cosines}")
    assert cosines["torch_fp32"] >= 0.9999 and cosines["torch_fp16"] >= 0.999, cosines
    random = _embed(client, "torch_random", texts[:4], tokenizer)  # the throughput stand-in: right shape, wrong
    assert random.shape == (4, expected.shape[1]) and (random * expected[:4]).sum(1).max() < 0.9  # numbers


def test_bad_token_input_is_refused_and_the_model_keeps_serving(torch_server):
    server, _ = torch_server
    client = grpcclient.InferenceServerClient(server.grpc_url)
    ids = np.array([[101, 10_000_000, 102]], dtype=np.int64)  # an id past the vocabulary
    inputs = [grpcclient.InferInput("input_ids", ids.shape, "INT64"),
              grpcclient.InferInput("attention_mask", ids.shape, "INT64")]
    inputs[0].set_data_from_numpy(ids)
    inputs[1].set_data_from_numpy(np.ones_like(ids))
    with pytest.raises(InferenceServerException, match="PyTorch cannot run this input: input_ids holds 10000000"):
        client.infer("torch_fp32", inputs)
    inputs[0].set_data_from_numpy(np.array([[101, 7592, 102]], dtype=np.int64))
    assert client.infer("torch_fp32", inputs).as_numpy("sentence_embedding").shape == (1, 384)


def test_missing_weights_fail_the_load_unless_random_weights_are_asked_for(torch_server, model_repository):
    server, repo = torch_server
    _encoder(repo, "torch_no_weights", False, torch_dtype="float32")
    client = grpcclient.InferenceServerClient(server.grpc_url)
    with pytest.raises(InferenceServerException, match="no model.safetensors"):
        client.load_model("torch_no_weights", headers=server.admin_headers)
    assert client.is_model_ready("torch_fp32")
