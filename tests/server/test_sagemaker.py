"""SageMaker packaging, served the way SageMaker's Triton container serves it (its `serve` script's arguments, only
/ping and /invocations open) with the image's packages alone and the unpacked archive read-only (the deployment
rehearsal, conftest.as_deployed), and invoked through the HTTP transport. Every target's archive of every entry
model holds every file its configs name."""

import json
import tarfile

import numpy as np
import pytest

from tritonrepo import deployable, render
from tritonrepo.clients import EmbeddingClient, NerClient
from tritonrepo.clients.sagemaker import InvocationsClient
from tritonrepo.deploy import Placement, package_sagemaker, sagemaker_server, stage_sagemaker
from tritonrepo.errors import InvalidInputError, ServerUnavailableError, ToolNotFoundError
from tritonrepo.export import families
from tritonrepo.targets import TARGETS

pytestmark = pytest.mark.server

TEXTS = ["Angela Merkel met Reuters editors in Berlin on Friday.", "", "oil prices fall", "Zürich café " * 100]


def _package(model: str, repository, tmp_path):
    files = package_sagemaker(model, Placement("ml.g5.xlarge", 2, "cpu", 150.0, "given"), tmp_path / model,
                              repository=repository)
    unpacked = tmp_path / model / "model"
    with tarfile.open(files["archive"]) as tar:
        names = tar.getnames()
        tar.extractall(unpacked, filter="data")
    return files, unpacked, names, json.loads(files["endpoint"].read_text())


def _serve(unpacked, env, as_deployed, log_file):
    kw = as_deployed(unpacked)
    return sagemaker_server(unpacked, env | kw.pop("env"), log_file=log_file, **kw)


ENTRY_MODELS = ["sbert", "sbert_int8", "ner", "ner_int8", "rerank", "rerank_int8", "video_shots", "video_shots_live"]


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_every_targets_archive_of_every_entry_model_holds_what_its_configs_name(model_repository, tmp_path, target):
    for model in ENTRY_MODELS:
        staged = tmp_path / model
        packed = stage_sagemaker(model, target, staged, model_repository)  # refuses what would not load
        assert sorted(p.name for p in staged.iterdir()) == sorted(packed) and not deployable.check(staged, target)
    config = (tmp_path / "sbert" / "sbert_encoder" / "config.pbtxt").read_text()
    assert f"target: {target})" in config and (tmp_path / "sbert" / "sbert_encoder" / "1" / "model.fp32.onnx").exists()
    (tmp_path / "sbert" / "sbert_encoder" / "1" / "model.fp32.onnx").unlink()
    with pytest.raises(ToolNotFoundError, match="sbert_encoder/1/model.fp32.onnx.*missing"):
        stage_sagemaker("sbert", target, tmp_path / "broken", tmp_path / "sbert")


def test_archive_holds_the_model_and_its_steps_as_top_level_folders(model_repository, tmp_path):
    files, unpacked, names, endpoint = _package("ner_int8", model_repository, tmp_path)
    assert sorted(p.name for p in unpacked.iterdir()) == ["ner_decoder", "ner_encoder_int8", "ner_int8",
                                                          "ner_tokenizer"]
    assert "config.pbtxt" not in names and not any("/configs/" in n or "__pycache__" in n for n in names)
    for folder in unpacked.iterdir():  # each carries the target's config as its config.pbtxt
        spec = families.spec(folder.name)
        assert (folder / "config.pbtxt").read_text() == render.to_text(render.model_config(spec, "cpu"), "cpu")
    env = endpoint["CreateModel"]["PrimaryContainer"]["Environment"]
    assert env["SAGEMAKER_TRITON_DEFAULT_MODEL_NAME"] == "ner_int8"
    variant = endpoint["CreateEndpointConfig"]["ProductionVariants"][0]
    assert (variant["InstanceType"], variant["InitialInstanceCount"]) == ("ml.g5.xlarge", 2)
    scaling = endpoint["PutScalingPolicy"]["TargetTrackingScalingPolicyConfiguration"]
    assert scaling["TargetValue"] == 150.0 * 60  # invocations per instance per minute
    assert scaling["PredefinedMetricSpecification"]["PredefinedMetricType"] == "SageMakerVariantInvocationsPerInstance"
    target = endpoint["RegisterScalableTarget"]
    assert target["ResourceId"] == "endpoint/ner-int8/variant/AllTraffic" and target["MinCapacity"] == 2


def test_ensemble_endpoint_answers_invocations_as_the_grpc_server_does(model_repository, triton, tmp_path, as_deployed):
    _, unpacked, _, endpoint = _package("sbert_int8", model_repository, tmp_path)
    env = endpoint["CreateModel"]["PrimaryContainer"]["Environment"]
    with _serve(unpacked, env, as_deployed, tmp_path / "log") as server:  # loads the ensemble's steps itself
        # the one open socket: Triton 24.10 binds SageMaker's endpoint to every interface (there is no address
        # option; the platform's container must listen there), and HTTP, gRPC and metrics are off
        assert server.listening() == {("0.0.0.0", server.sagemaker_port)}
        client = InvocationsClient(f"http://127.0.0.1:{server.sagemaker_port}", retry=_fast())
        vectors = client.embed(TEXTS)
        with pytest.raises(InvalidInputError, match="missing required input"):
            client.infer([])
        assert client.embed(["still serving"]).shape == (1, 384)
    with EmbeddingClient(triton.grpc_url, "sbert_int8") as grpc:
        np.testing.assert_allclose(vectors, grpc.embed(TEXTS), atol=1e-6)


def test_bls_endpoint_loads_what_it_calls_and_refuses_bad_input(model_repository, triton, tmp_path, sample_media,
                                                               as_deployed):
    _, unpacked, _, endpoint = _package("video_shots", model_repository, tmp_path)
    env = endpoint["CreateModel"]["PrimaryContainer"]["Environment"]
    assert "--load-model=transnetv2_int8" in env["SAGEMAKER_TRITON_ADDITIONAL_ARGS"]
    with _serve(unpacked, env, as_deployed, tmp_path / "log") as server:
        client = InvocationsClient(f"http://127.0.0.1:{server.sagemaker_port}", retry=_fast())
        result = client.shots(sample_media["h264.mp4"])
        with pytest.raises(InvalidInputError, match="not a video"):
            client.shots(sample_media["random.bin"])
        port = server.sagemaker_port
    assert result.frames == 120 and result.shots[-1].end_frame == 119
    with pytest.raises(ServerUnavailableError):
        InvocationsClient(f"http://127.0.0.1:{port}", retry=_fast()).embed(["the server is gone"])


def test_ner_endpoint_gives_the_grpc_entities(model_repository, triton, tmp_path, as_deployed):
    _, unpacked, _, endpoint = _package("ner_int8", model_repository, tmp_path)
    env = endpoint["CreateModel"]["PrimaryContainer"]["Environment"]
    with _serve(unpacked, env, as_deployed, tmp_path / "log") as server:
        found = InvocationsClient(f"http://127.0.0.1:{server.sagemaker_port}").entities(TEXTS)
    with NerClient(triton.grpc_url, "ner_int8") as grpc:
        assert found == grpc.entities(TEXTS)


def _fast():
    from tritonrepo.clients.grpc_core import RetryPolicy

    return RetryPolicy(attempts=2, backoff_s=0.01)
