"""`tritonrepo add` without a server: format detection, the spec file, what it refuses; `check`'s config lint."""

import dataclasses
import re
import shutil

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from tritonrepo import added, check, render, validate
from tritonrepo.errors import AddError, SpecError
from tritonrepo.export import added as add_export
from tritonrepo.export import families
from tritonrepo.paths import MODEL_REPOSITORY
from tritonrepo.specs import Tensor
from tritonrepo.validate import Checks, compare

FEATURES = Tensor(name="features", dtype="FP32", dims=(-1, 4))


def _onnx(path, nodes, inputs, outputs, opset=17, domains=()):
    graph = helper.make_graph(nodes, "g", inputs, outputs)
    imports = [helper.make_opsetid("", opset), *(helper.make_opsetid(d, 1) for d in domains)]
    # IR 10: what ONNX Runtime 1.19 (the NGC image's backend) and 1.23 (the Python models') read; onnx 1.23 writes 14
    onnx.save(helper.make_model(graph, opset_imports=imports, ir_version=10), str(path))
    return path


def _model(**kw) -> added.AddedModel:
    base = dict(name="toy", source=added.Source(format="onnx", path="/x.onnx", sha256="0" * 64),
                inputs=(FEATURES,), outputs=(Tensor(name="probs", dtype="FP32", dims=(3,)),))
    return added.AddedModel(**base | kw)


def test_formats_are_recognised_and_weights_without_code_refused(tmp_path):
    torch = pytest.importorskip("torch")
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text("{}")
    (tmp_path / "sm").mkdir()
    (tmp_path / "sm" / "saved_model.pb").write_bytes(b"")
    module = torch.nn.Linear(4, 3)
    torch.jit.save(torch.jit.script(module), tmp_path / "m.pt")
    torch.save(module.state_dict(), tmp_path / "weights.pt")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])
    _onnx(tmp_path / "m.onnx", [helper.make_node("Identity", ["x"], ["y"])], [x],
          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])])
    assert [add_export.detect(tmp_path / p) for p in ("hf", "sm", "m.pt", "m.onnx")] == \
        ["huggingface", "tensorflow", "torchscript", "onnx"]
    with pytest.raises(AddError, match="without code.*torch.jit"):
        add_export.detect(tmp_path / "weights.pt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(AddError, match="neither a Hugging Face checkpoint"):
        add_export.detect(tmp_path / "empty")


def test_onnx_without_batch_axis_is_refused(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    path = _onnx(tmp_path / "fixed.onnx", [helper.make_node("Relu", ["x"], ["y"])], [x],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    with pytest.raises(AddError, match="'x' has no batch axis.*dynamic axis 0"):
        add_export.OnnxFile(path).signature()


def test_output_that_ignores_the_batch_is_refused(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])
    path = _onnx(tmp_path / "sum.onnx", [helper.make_node("ReduceSum", ["x"], ["y"], keepdims=1)], [x],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1])])
    with pytest.raises(AddError, match="'y' does not follow the batch.*\\[1, 1\\] for 3"):
        add_export.OnnxFile(path).signature()


def test_dtype_triton_lacks_and_unsupported_op_are_refused(tmp_path):
    c = helper.make_tensor_value_info("c", TensorProto.COMPLEX64, ["n", 2])
    path = _onnx(tmp_path / "complex.onnx", [helper.make_node("Identity", ["c"], ["d"])], [c],
                 [helper.make_tensor_value_info("d", TensorProto.COMPLEX64, ["n", 2])])
    with pytest.raises(AddError, match="input 'c': dtype complex64 has no Triton type"):
        add_export.OnnxFile(path).signature()
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])
    path = _onnx(tmp_path / "custom.onnx", [helper.make_node("Frobnicate", ["x"], ["y"], domain="com.example")],
                 [x], [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])], domains=("com.example",))
    with pytest.raises(AddError, match="ONNX Runtime cannot load custom.onnx.*unsupported op"):
        add_export.OnnxFile(path).signature()


def test_torchscript_needs_its_input_shapes(tmp_path):
    torch = pytest.importorskip("torch")
    torch.jit.save(torch.jit.script(torch.nn.Linear(4, 3)), tmp_path / "m.pt")
    with pytest.raises(AddError, match="--input NAME:DTYPE:DIMS"):
        add_export.TorchScriptFile(tmp_path / "m.pt").signature()
    two = (FEATURES, Tensor(name="other", dtype="FP32", dims=(4,)))
    with pytest.raises(AddError, match="forward\\(\\) takes 1 tensors, 2 --input given"):
        add_export.TorchScriptFile(tmp_path / "m.pt", inputs=two).signature()


def test_spec_file_round_trips_and_renders_per_target():
    hf = _model(source=added.Source(format="huggingface", path="/ckpt", sha256="1" * 64), task="token-classification",
                inputs=(Tensor(name="input_ids", dtype="INT64", dims=(-1,)),
                        Tensor(name="attention_mask", dtype="INT64", dims=(-1,))),
                outputs=(Tensor(name="logits", dtype="FP32", dims=(-1, 9)),), ragged=True, labels=("O", "B-PER"))
    assert added.AddedModel.from_yaml(hf.to_yaml()) == hf
    assert [s.name for s in hf.specs()] == ["toy"]  # no tokenizer: the model takes token ids
    cpu = render.model_config(hf.model_spec(), "cpu")
    assert cpu.backend == "python" and cpu.parameters["model_filename"].string_value == "model.onnx"
    assert cpu.parameters["sort_by_length"].string_value == "true" and cpu.input[0].allow_ragged_batch
    assert cpu.instance_group[0].count == 2 and cpu.dynamic_batching.default_queue_policy.max_queue_size == 256
    gpu = render.model_config(hf.model_spec(), "l4")
    assert gpu.platform == "onnxruntime_onnx" and gpu.default_model_filename == "model.onnx"
    assert gpu.instance_group[0].kind == gpu.instance_group[0].KIND_GPU and not gpu.input[0].allow_ragged_batch

    text = dataclasses.replace(hf, text_input=True, max_tokens=128)
    assert added.AddedModel.from_yaml(text.to_yaml()) == text
    tokenizer, model, ensemble = text.specs()
    assert (tokenizer.name, model.name, ensemble.name) == ("toy_tokenizer", "toy_model", "toy")
    assert ensemble.inputs[0].dtype == "BYTES" and ensemble.outputs == hf.outputs
    params = dict(tokenizer.deployment("cpu").parameters)
    assert params == {"max_length": "128", "pad_to_multiple_of": "1"}  # per-token outputs keep the text's length
    assert dict(tokenizer.deployment("a10g").parameters)["pad_to_multiple_of"] == "32"

    tf = _model(source=added.Source(format="tensorflow", path="/sm", sha256="2" * 64),
                gpu_backend="tensorflow_savedmodel")
    native = render.model_config(tf.model_spec(), "a100")
    assert native.platform == "tensorflow_savedmodel" and native.default_model_filename == "model.savedmodel"
    assert render.model_config(tf.model_spec(), "cpu").parameters["model_filename"].string_value == "model.onnx"


def test_spec_file_refuses_what_cannot_be_served():
    with pytest.raises(SpecError, match="needs a batch axis"):
        _model(max_batch_size=0)
    with pytest.raises(SpecError, match="native TensorFlow backend serves only a SavedModel"):
        _model(gpu_backend="tensorflow_savedmodel")
    with pytest.raises(SpecError, match="tensor name 'input.1'"):
        _model(inputs=(Tensor(name="input.1", dtype="FP32", dims=(4,)),))
    with pytest.raises(SpecError, match="not a valid added-model file"):
        added.AddedModel.from_yaml("name: x\n")


def test_reference_round_trip_and_tolerances(tmp_path):
    requests = [{"TEXT": np.array([[b"caf\xc3\xa9"], [b"x"]], dtype=object), "N": np.arange(2)}]
    answers = [{"EMBEDDING": np.eye(2, dtype=np.float32)}]
    validate.save_reference(tmp_path / "r.npz", requests, answers, {"cosine_min": 0.99})
    tolerance, pairs = validate.load_reference(tmp_path / "r.npz")
    assert tolerance == {"cosine_min": 0.99}
    assert pairs[0][0]["TEXT"].dtype == object and pairs[0][0]["TEXT"][0, 0] == "café".encode()
    checks = Checks("x")
    compare(checks, "EMBEDDING", answers[0]["EMBEDDING"], np.array([[1, 0.01], [0.5, 0.5]], np.float32),
            tolerance, "request 0")
    assert len(checks.failures) == 1 and "cosine 0.707" in checks.failures[0]
    checks = Checks("y")
    compare(checks, "p", np.array([1.0, 2.0]), np.array([1.00005, 2.01]), {"atol": 1e-4, "rtol": 1e-3}, "r")
    assert checks.failures == ["r p: 1 of 2 values outside atol 0.0001 + rtol 0.001 (max |diff| 0.01)"]


def test_lint_names_broken_configs(tmp_path):
    shutil.copytree(MODEL_REPOSITORY / "sbert_int8", tmp_path / "sbert_int8", ignore=shutil.ignore_patterns("1"))
    shutil.copytree(MODEL_REPOSITORY / "sbert_encoder_int8", tmp_path / "sbert_encoder_int8",
                    ignore=shutil.ignore_patterns("1"))
    cpu = tmp_path / "sbert_encoder_int8" / "configs" / "cpu.pbtxt"
    text = re.sub(r"  preferred_batch_size: \d+\n", "", cpu.read_text())  # the tuned sizes, if any
    cpu.write_text(text.replace("kind: KIND_CPU", "kind: KIND_GPU")
                   .replace("dynamic_batching {", "dynamic_batching {\n  preferred_batch_size: 512"))
    findings = {(f.level, f.model, f.message.split(":")[0]) for f in check.lint(tmp_path)}
    assert ("error", "sbert_encoder_int8", "KIND_GPU instances on target 'cpu', which has no GPU") in findings
    assert ("error", "sbert_encoder_int8", "preferred_batch_size [512] outside 1..max_batch_size 256") in findings
    assert ("warning", "sbert_int8", "missing") not in findings  # every target's file is there
    # the ensemble's step loses its tokenizer: every target names it
    errors = [f for f in check.lint(tmp_path) if f.model == "sbert_int8"]
    assert errors[0].message == "step 0 (sbert_tokenizer): no model 'sbert_tokenizer' in the repository"
    assert errors[0].where == "sbert_int8/configs/{cpu,t4,a10g,l4,a100,h100}"
    assert all("is used before a step produces it" in f.message for f in errors[1:])


def test_lint_checks_ensemble_wiring_and_the_main_repository_is_clean(tmp_path):
    for model in ("sbert", "sbert_tokenizer", "sbert_encoder"):
        shutil.copytree(MODEL_REPOSITORY / model, tmp_path / model, ignore=shutil.ignore_patterns("1"))
    path = tmp_path / "sbert" / "configs" / "cpu.pbtxt"
    path.write_text(path.read_text().replace('key: "attention_mask"', 'key: "attention"'))
    messages = [f.message for f in check.lint(tmp_path) if f.level == "error"]
    assert any("'sbert_encoder' has no input 'attention'" in m for m in messages)
    assert any("required inputs ['attention_mask'] are not mapped" in m for m in messages)
    assert not [f for f in check.lint(MODEL_REPOSITORY, families.all_specs()) if f.level == "error"]  # no drift
    assert not [f for f in check.lint(MODEL_REPOSITORY) if "queue policy" in f.message]  # the specs refuse it
    one = tmp_path / "sbert_encoder" / "configs" / "cpu.pbtxt"  # a hand-edited config can still hold it
    one.write_text(one.read_text().replace("count: 2", "count: 1", 1))
    assert any("one instance: a queue policy" in f.message and f.level == "warning" for f in check.lint(tmp_path))


def test_spec_file_of_an_added_model_is_read_by_every_tool(tmp_path):
    model = _model()
    added.save(model, tmp_path)
    assert added.load_all(tmp_path) == [model]
    assert added.spec_of("toy", tmp_path).name == "toy"
    with pytest.raises(SpecError, match="no added model 'nope'"):
        added.load("nope", tmp_path)
    # the export cache follows the spec file (which holds the source's hash): an edit re-exports
    assert add_export.fingerprint(model) != add_export.fingerprint(_model(atol=1e-3))
    assert add_export.fingerprint(model) != add_export.fingerprint(
        _model(source=added.Source(format="onnx", path="/x.onnx", sha256="1" * 64)))


def test_samples_file_drives_validation_and_is_recorded(tmp_path):
    torch = pytest.importorskip("torch")
    torch.jit.save(torch.jit.script(torch.nn.Linear(4, 3)), tmp_path / "m.pt")
    x = Tensor(name="x", dtype="FP32", dims=(4,))
    np.savez(tmp_path / "rows.npz", x=np.random.default_rng(0).standard_normal((6, 4)))
    done = add_export.add("lin", tmp_path / "m.pt", repository=tmp_path / "repo", tests_dir=None, inputs=(x,),
                          samples=tmp_path / "rows.npz")
    assert (done["validation"]["requests"], done["validation"]["rows"]) == (2, 6)  # requests of up to 4 rows
    assert added.load("lin", tmp_path / "repo").samples == str(tmp_path / "rows.npz")
    tolerance, pairs = validate.load_reference(tmp_path / "repo" / "lin" / "1" / "reference.npz")
    assert [len(p[0]["x"]) for p in pairs] == [4, 2] and pairs[0][0]["x"].dtype == np.float32
    np.savez(tmp_path / "other.npz", y=np.zeros((6, 4)))
    with pytest.raises(AddError, match="no arrays for inputs \\['x'\\]"):
        add_export.add("lin2", tmp_path / "m.pt", repository=tmp_path / "repo", tests_dir=None, inputs=(x,),
                       samples=tmp_path / "other.npz")
