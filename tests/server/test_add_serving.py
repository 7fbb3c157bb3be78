"""`tritonrepo add` end to end. Small real models are built here (a Keras model saved as a SavedModel, a tiny Hugging
Face sequence classifier, a TorchScript module, an ONNX graph), plus the briefly fine-tuned NER checkpoint of the test
session; each is added into a temporary repository, served by the real tritonserver, and compared with its framework
model. The tiny models are randomly initialised (seeded): they test that serving reproduces the framework's numbers,
not accuracy."""

import os
import shutil

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from typer.testing import CliRunner

from tritonrepo import added, check
from tritonrepo.cli import app
from tritonrepo.errors import AddError
from tritonrepo.export import added as add_export
from tritonrepo.export import families
from tritonrepo.export.ner import NER_LABELS
from tritonrepo.server import TritonServer
from tritonrepo.specs import Tensor

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from tritonrepo.paths import SBERT_WEIGHTS

    out = tmp_path_factory.mktemp("sources")
    torch.manual_seed(0)

    class Pool(torch.nn.Module):  # variable-length rows of 4 features -> class probabilities and the mean row
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(4, 3)

        def forward(self, features):
            pooled = features.mean(dim=1)
            return torch.softmax(self.lin(pooled), dim=-1), pooled

    pool = Pool().eval()
    torch.jit.save(torch.jit.script(pool), out / "pool.pt")
    with torch.no_grad():
        torch.onnx.export(pool, (torch.randn(2, 5, 4),), str(out / "pool.onnx"), input_names=["features"],
                          output_names=["probs", "pooled"], dynamo=False,
                          dynamic_axes={"features": {0: "batch", 1: "rows"}, "probs": {0: "batch"},
                                        "pooled": {0: "batch"}})
    config = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                        num_labels=3, id2label={0: "world", 1: "sports", 2: "business"},
                        label2id={"world": 0, "sports": 1, "business": 2})
    BertForSequenceClassification(config).eval().save_pretrained(out / "tiny_cls")
    shutil.copy(SBERT_WEIGHTS / "tokenizer.json", out / "tiny_cls" / "tokenizer.json")  # a BERT uncased vocabulary

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    keras.utils.set_random_seed(0)
    features = keras.Input((6,), name="features")
    hidden = keras.layers.Dense(16, activation="relu")(features)
    keras_model = keras.Model(features, keras.layers.Dense(3, activation="softmax")(hidden))
    keras_model.export(str(out / "keras_sm"), verbose=False)
    return out


@pytest.fixture(scope="module")
def repo(sources, ner_export, tmp_path_factory):
    root = tmp_path_factory.mktemp("added")
    repository, tests = root / "repo", root / "tests"
    common = dict(repository=repository, tests_dir=tests)
    add_export.add("keras_dense", sources / "keras_sm", **common)
    add_export.add("keras_native", sources / "keras_sm", tf_native=True, **common)
    add_export.add("pool_ts", sources / "pool.pt", inputs=(Tensor(name="features", dtype="FP32", dims=(-1, 4)),),
                   output_names=("probs", "pooled"), **common)
    add_export.add("pool_onnx", sources / "pool.onnx", **common)
    add_export.add("ner_hf", ner_export.training.out_dir, **common)
    result = CliRunner().invoke(app, ["add", "tiny_cls", "--from", str(sources / "tiny_cls"), "-r", str(repository),
                                      "--tests", str(tests)])
    assert result.exit_code == 0, result.output
    assert "added tiny_cls (huggingface, sequence-classification)" in result.output
    return repository


def test_added_models_read_their_tensors_from_the_model(repo):
    got = {m.name: m for m in added.load_all(repo)}
    assert sorted(got) == ["keras_dense", "keras_native", "ner_hf", "pool_onnx", "pool_ts", "tiny_cls"]
    assert [(t.name, t.dtype, t.dims) for t in got["keras_dense"].outputs] == [("output_0", "FP32", (3,))]
    assert got["keras_dense"].inputs == (Tensor(name="features", dtype="FP32", dims=(6,)),)
    assert [(t.name, t.dims) for t in got["pool_ts"].outputs] == [("probs", (3,)), ("pooled", (4,))]
    assert got["pool_onnx"].inputs == got["pool_ts"].inputs  # the variable row count read from both formats
    assert got["tiny_cls"].task == "sequence-classification" and got["tiny_cls"].ragged
    assert got["tiny_cls"].text_input and got["ner_hf"].text_input  # both have a tokenizer.json: text in
    assert got["tiny_cls"].labels == ("world", "sports", "business")
    assert got["ner_hf"].task == "token-classification"
    assert got["ner_hf"].outputs == (Tensor(name="logits", dtype="FP32", dims=(-1, len(NER_LABELS))),)
    assert got["ner_hf"].labels == NER_LABELS
    for name in got:
        report = (repo / got[name].model_name / "1" / "validation.json").read_text()
        assert '"requests": 8' in report
        test = (repo.parent / "tests" / f"test_added_{name}.py").read_text()
        compile(test, f"test_added_{name}.py", "exec")
        assert f'added.stage("{name}", tmp_path), models=["{name}"]' in test
    native = (repo / "keras_native" / "configs" / "h100.pbtxt").read_text()
    assert 'platform: "tensorflow_savedmodel"' in native and "KIND_GPU" in native
    assert (repo / "keras_native" / "1" / "model.savedmodel" / "saved_model.pb").exists()
    assert 'platform: "onnxruntime_onnx"' in (repo / "keras_dense" / "configs" / "h100.pbtxt").read_text()


def test_added_models_serve_what_their_framework_models_compute(repo, sources):
    with TritonServer(repo, model_config_name="cpu") as server:
        report = check.run(repo, url=server.grpc_url)
        assert report.ok, report.text()
        status = {s.model: s.status for s in report.served}
        # the text models twice: strings through the tokenizer, and token ids straight to the model
        assert status == dict.fromkeys(["keras_dense", "keras_native", "ner_hf", "ner_hf_model", "pool_onnx",
                                        "pool_ts", "tiny_cls", "tiny_cls_model"], "reference") | {
            "ner_hf_tokenizer": "through ner_hf", "tiny_cls_tokenizer": "through tiny_cls"}
        assert all(s.metrics for s in report.served if s.status == "reference")

        # a text the export never saw, as a string, against the PyTorch checkpoint on the same tokenizer
        import torch
        from tokenizers import Tokenizer
        from transformers import AutoModelForSequenceClassification

        text = "Shares in Lufthansa fell 4 percent in Frankfurt on Tuesday."
        ids = Tokenizer.from_file(str(sources / "tiny_cls" / "tokenizer.json")).encode(text).ids
        with torch.no_grad():
            want = AutoModelForSequenceClassification.from_pretrained(sources / "tiny_cls")(
                input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long)).logits.numpy()
        request = grpcclient.InferInput("TEXT", [1, 1], "BYTES")
        request.set_data_from_numpy(np.array([[text.encode()]], dtype=object))
        client = grpcclient.InferenceServerClient(server.grpc_url)
        np.testing.assert_allclose(client.infer("tiny_cls", [request]).as_numpy("logits"), want, atol=1e-4)

        # a fresh batch, never seen at export, against the SavedModel itself
        import tensorflow as tf

        x = np.random.default_rng(7).standard_normal((5, 6)).astype(np.float32)
        expected = tf.saved_model.load(str(sources / "keras_sm")).signatures["serving_default"](
            features=tf.constant(x))["output_0"].numpy()
        request = grpcclient.InferInput("features", [5, 6], "FP32")
        request.set_data_from_numpy(x)
        got = client.infer("keras_dense", [request]).as_numpy("output_0")
        client.close()
        np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-4)


def test_a_broken_model_is_named_and_the_others_still_serve(repo, tmp_path):
    copy = tmp_path / "repo"
    shutil.copytree(repo, copy, ignore=shutil.ignore_patterns("model.savedmodel", "ner_hf*", "tiny_cls*"))
    (copy / "pool_onnx" / "1" / "model.onnx").write_bytes(b"not an onnx graph")
    report = check.run(copy)
    assert not report.ok
    status = {s.model: (s.status, s.ok) for s in report.served}
    assert status["pool_onnx"] == ("load failed", False)
    assert status["pool_ts"] == ("reference", True) and status["keras_dense"] == ("reference", True)


def test_a_changed_source_is_refused_until_added_again(sources, tmp_path):
    source = tmp_path / "pool.onnx"
    shutil.copy(sources / "pool.onnx", source)
    model = add_export.add("pool", source, repository=tmp_path / "repo", tests_dir=None)["model"]
    with open(source, "ab") as f:
        f.write(b"\0")
    with pytest.raises(AddError, match="changed since `tritonrepo add pool` read it"):
        add_export.export(model, force=True)
    with pytest.raises(AddError, match="already added"):
        add_export.add("pool", source, repository=tmp_path / "repo", tests_dir=None)


def test_an_added_model_is_swept_on_its_reference_requests(repo, tmp_path):
    import dataclasses

    from tritonrepo.perf import sweep

    # strings in through the tokenizer (real sentences); the model behind it is what varies
    text = sweep.plan_for("tiny_cls", repo)
    assert (text.entry, text.swept, text.input_tensor, text.inputs) == ("tiny_cls", "tiny_cls_model", "TEXT",
                                                                        "conll-test-sentences")
    # tensors: the reference requests kept at export
    plan = dataclasses.replace(sweep.plan_for("pool_ts", repo), concurrencies=(1, 4), rate_probes=0)
    assert (plan.swept, plan.inputs, plan.input_tensor) == ("pool_ts", "reference:pool_ts", ("features",))
    data = sweep.write_inputs(plan, tmp_path / "in.json", repository=repo).read_text()
    assert data.count('"features"') == 15  # every row of the 8 requests (1-3 rows each), one request per row
    profile, path = sweep.run("pool_ts", plan=plan, repository=repo, out_dir=tmp_path, measurement_ms=1000,
                              only=("untuned", "i2-d0-intra_op_threads=1"))
    assert [len(v.rows) for v in profile.variants] == [2, 2]
    assert profile.best.infer_per_s > 0 and path == tmp_path / "cpu" / "pool_ts.json" and path.exists()


def test_check_passes_on_the_served_repository(model_repository, triton):
    """Every model of the session's repository answers; the SBERT ensembles match sentence-transformers."""
    report = check.run(model_repository, url=triton.grpc_url, specs=families.all_specs(model_repository))
    assert report.ok, report.text()
    status = {s.model: s.status for s in report.served}
    assert status["sbert"] == status["sbert_int8"] == "reference"
    assert status["video_shots"] == status["ner"] == status["rerank"] == "warm-up"
    assert status["sbert_tokenizer"] == "through sbert, sbert_int8"
    assert len(status) == len(families.all_specs(model_repository))
