import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc
from typer.testing import CliRunner

from tritonrepo import render
from tritonrepo.cli import app
from tritonrepo.errors import RenderDriftError
from tritonrepo.export import families
from tritonrepo.export.ner import NER_MAX_TOKENS
from tritonrepo.export.transnetv2 import NVDEC_CODECS
from tritonrepo.paths import MODEL_REPOSITORY
from tritonrepo.specs import Backend, Batching, Deployment, ModelSpec, Tensor
from tritonrepo.targets import TARGETS
from tritonrepo.text_specs import ENCODER_MAX_QUEUE


def test_every_committed_pbtxt_parses_and_matches_its_spec():
    files = sorted(MODEL_REPOSITORY.glob("*/config.pbtxt")) + sorted(MODEL_REPOSITORY.glob("*/configs/*.pbtxt"))
    assert len(files) == len(families.all_specs()) * (len(TARGETS) + 1)
    for path in files:
        cfg = text_format.Parse(path.read_text(), mc.ModelConfig())
        assert cfg.name == path.parts[len(MODEL_REPOSITORY.parts)]
    render.check(MODEL_REPOSITORY, families.all_specs())


def test_render_check_cli_fails_on_drift(tmp_path):
    runner = CliRunner()
    assert runner.invoke(app, ["render", "-r", str(tmp_path)]).exit_code == 0
    assert runner.invoke(app, ["render", "--check", "-r", str(tmp_path)]).exit_code == 0
    path = tmp_path / "sbert_encoder" / "configs" / "t4.pbtxt"
    path.write_text(path.read_text().replace("max_batch_size: 128", "max_batch_size: 64"))
    (tmp_path / "ghost" / "configs").mkdir(parents=True)
    (tmp_path / "ghost" / "config.pbtxt").write_text('name: "ghost"\n')
    result = runner.invoke(app, ["render", "--check", "-r", str(tmp_path)])
    assert result.exit_code == 1
    assert "differs: sbert_encoder/configs/t4.pbtxt" in result.output
    assert "extra (no spec): ghost/config.pbtxt" in result.output


def test_max_batch_size_zero_survives_proto3(tmp_path):
    t = Tensor(name="X", dtype="FP32", dims=(3,))
    unbatched = ModelSpec(name="plain", inputs=(t,), outputs=(Tensor(name="Y", dtype="FP32", dims=(3,)),),
                          python_model="onnx_encoder", deployments={
                              target: Deployment(backend=Backend.PYTHON,
                                                 batching=Batching(max_batch_size=0, dynamic=False))
                              for target in TARGETS})
    text = render.to_text(render.model_config(unbatched, "cpu"), "cpu")
    assert "max_batch_size: 0" in text
    assert "dynamic_batching" not in text  # never switched on by accident
    assert render.parse(text).max_batch_size == 0


def test_targets_differ_in_backend_instances_and_batching():
    enc = families.spec("sbert_encoder")
    cpu, t4, h100 = (render.model_config(enc, t) for t in ("cpu", "t4", "h100"))
    assert cpu.backend == "python" and t4.platform == "onnxruntime_onnx"
    assert cpu.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU
    assert t4.instance_group[0].kind == mc.ModelInstanceGroup.KIND_GPU
    assert t4.max_batch_size < h100.max_batch_size
    assert list(h100.dynamic_batching.preferred_batch_size) == [64, 128, 256]
    int8_t4 = render.model_config(families.spec("sbert_encoder_int8"), "t4")  # int8 kernels are CPU kernels, and the
    # NGC image's native ORT (1.19.2) has no 8-bit MatMulNBits: the Python backend with the image's onnxruntime
    assert int8_t4.backend == "python" and int8_t4.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU
    assert all(i.allow_ragged_batch for i in cpu.input) and not any(i.allow_ragged_batch for i in t4.input)


def test_bytes_tensors_render_as_type_string():
    cfg = render.model_config(families.spec("sbert"), "cpu")
    assert cfg.input[0].data_type == mc.TYPE_STRING
    assert [s.model_name for s in cfg.ensemble_scheduling.step] == ["sbert_tokenizer", "sbert_encoder"]


def test_write_removes_stale_configs(tmp_path):
    render.write(tmp_path, families.all_specs())
    stale = tmp_path / "sbert" / "configs" / "v100.pbtxt"
    stale.write_text("name: 'sbert'")
    assert "sbert/configs/v100.pbtxt" in render.write(tmp_path, families.all_specs())
    assert not stale.exists()
    with pytest.raises(RenderDriftError):
        (tmp_path / "sbert" / "config.pbtxt").unlink()
        render.check(tmp_path, families.all_specs())


def test_video_models_render_decoupled_sequence_and_dali_configs():
    decode_gpu = render.model_config(families.spec("video_decode"), "h100")
    assert decode_gpu.backend == "dali" and decode_gpu.model_transaction_policy.decoupled
    assert decode_gpu.instance_group[0].kind == mc.ModelInstanceGroup.KIND_GPU
    decode_cpu = render.model_config(families.spec("video_decode"), "cpu")
    assert decode_cpu.backend == "python" and decode_cpu.model_transaction_policy.decoupled
    live = render.model_config(families.spec("video_shots_live"), "cpu")
    controls = {c.name: c.control[0] for c in live.sequence_batching.control_input}
    assert controls["START"].kind == mc.ModelSequenceBatching.Control.CONTROL_SEQUENCE_START
    assert controls["END"].kind == mc.ModelSequenceBatching.Control.CONTROL_SEQUENCE_END
    assert list(controls["END"].int32_false_true) == [0, 1]
    assert live.sequence_batching.oldest.max_candidate_sequences > 1 and not live.HasField("dynamic_batching")
    shots_gpu = render.model_config(families.spec("video_shots"), "t4")
    assert shots_gpu.parameters["decode_model_codecs"].string_value == ",".join(NVDEC_CODECS)
    assert render.model_config(families.spec("transnetv2"), "a10g").default_model_filename == "model.fp32.onnx"


def test_queue_policy_and_response_cache_render_where_the_specs_ask():
    toy = ModelSpec(name="toy", inputs=(Tensor(name="X", dtype="FP32", dims=(4,)),),
                    outputs=(Tensor(name="Y", dtype="FP32", dims=(4,)),), python_model="onnx_encoder",
                    deployments={t: Deployment(backend=Backend.PYTHON, count=2, response_cache=True, batching=Batching(
                        max_batch_size=8, max_queue_size=4, queue_timeout_us=50_000)) for t in TARGETS})
    policy = render.model_config(toy, "cpu").dynamic_batching.default_queue_policy
    assert (policy.max_queue_size, policy.default_timeout_microseconds) == (4, 50_000)
    assert policy.timeout_action == mc.ModelQueuePolicy.REJECT and policy.allow_timeout_override
    assert render.model_config(toy, "cpu").response_cache.enable
    # served models: SBERT caches whole requests; NER only its encoder (the decoder reads a request parameter that
    # the cache key ignores); every encoder's queue is bounded, so overload is refused at once
    assert render.model_config(families.spec("sbert_int8"), "cpu").response_cache.enable
    assert not render.model_config(families.spec("ner_int8"), "cpu").response_cache.enable
    for name in ("sbert_encoder", "sbert_encoder_int8", "ner_encoder", "ner_encoder_int8"):
        for target in TARGETS:
            cfg = render.model_config(families.spec(name), target)
            assert cfg.dynamic_batching.default_queue_policy.max_queue_size == ENCODER_MAX_QUEUE, name
    assert render.model_config(families.spec("ner_encoder_int8"), "t4").response_cache.enable


def test_server_side_limits_render_as_parameters_operators_can_tune():
    def params(name, target="cpu"):
        return {k: v.string_value for k, v in render.model_config(families.spec(name), target).parameters.items()}

    shots = params("video_shots")
    assert {k: shots[k] for k in ("max_request_bytes", "max_frames", "max_pixels", "max_seconds")} == {
        "max_request_bytes": str(256 << 20), "max_frames": "1000000", "max_pixels": str(4096 * 2160),
        "max_seconds": "600"}
    assert params("video_shots_live")["max_seconds"] == "60" and "max_stream_frames" in params("video_shots_live")
    assert params("video_decode")["max_request_bytes"] == str(256 << 20)
    assert "max_request_bytes" not in params("video_decode", "h100")  # DALI reads no parameters
    assert params("ner_decoder", "t4")["max_tokens"] == str(NER_MAX_TOKENS)
    for tokenizer in ("sbert_tokenizer", "ner_tokenizer", "rerank_tokenizer"):
        assert params(tokenizer, "a100")["max_text_bytes"] == str(1 << 20)
