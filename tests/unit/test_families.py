"""The registry of built-in model families: each family module declares everything about its family, the registry
finds it, and what the families serve covers every built-in model."""

import json
import sys

import pytest

import tritonrepo.export as export_package
from tritonrepo import check, render
from tritonrepo.errors import TritonRepoError
from tritonrepo.export import families
from tritonrepo.export.families import FAMILIES, models_to_load
from tritonrepo.perf import sweep
from tritonrepo.targets import TARGETS

TOY = """
from tritonrepo.contracts import EMBEDDING, TEXT
from tritonrepo.export.family import Family
from tritonrepo.specs import EnsembleSpec, ModelSpec, Step, Tensor
from tritonrepo.targets import GPU_TARGETS
from tritonrepo.text_specs import ATTENTION_MASK, INPUT_IDS, GpuStart, encoder_deployments, tokenizer_spec
from tritonrepo.tuning import UNTUNED, SweepPlan

TOKENS = (INPUT_IDS, ATTENTION_MASK)
VECTOR = Tensor(name="sentence_embedding", dtype="FP32", dims=(384,))
GPU = {{target: GpuStart(64, (16, 32), 1000, tokenizer_instances=2) for target in GPU_TARGETS}}
IDS = {{t.name: t.name for t in TOKENS}}
SPECS = (
    tokenizer_spec("toy_tokenizer", 64, TOKENS, GPU, "UTF-8 text -> ids, mask"),
    ModelSpec(name="toy_encoder", inputs=TOKENS, outputs=(VECTOR,), python_model="onnx_encoder",
              deployments=encoder_deployments("toy_encoder", "fp32", TOKENS, (16, 64), GPU, request_batch=32)),
    EnsembleSpec(name="toy", inputs=(TEXT,), outputs=(EMBEDDING,), max_batch_size=32, steps=(
        Step(model="toy_tokenizer", input_map={{"TEXT": "TEXT"}}, output_map=IDS),
        Step(model="toy_encoder", input_map=IDS, output_map={{"sentence_embedding": "EMBEDDING"}}))),
)

FAMILY = Family(name={name!r}, order=99, specs=SPECS, recipe=dict, exporter=lambda config, force=False: {{}},
                installer=lambda repository, artifacts: [], serves=("toy",), evaluation="toy",
                plans={{"toy": SweepPlan(swept="toy_encoder", entry="toy", input_tensor="TEXT", inputs="toy-texts",
                                         variants=(UNTUNED,))}},
                inputs={{"toy-texts": lambda plan, limit, repository: [{{"TEXT": "toy"}}] * limit}})
"""


def test_the_families_serve_every_built_in_model(tmp_path):
    assert list(FAMILIES)[:4] == ["sbert", "ner", "rerank", "transnetv2"]  # build order
    # tmp_path: no added models
    assert models_to_load(FAMILIES, tmp_path) == sorted(s.name for s in families.all_specs(tmp_path))
    assert models_to_load(["transnetv2"], tmp_path) == ["transnetv2", "transnetv2_int8", "video_decode",
                                                        "video_shots", "video_shots_live"]  # BLS callees included
    assert "ner_tokenizer" in models_to_load(["ner"], tmp_path) and "rerank" not in models_to_load(["ner"], tmp_path)


@pytest.mark.parametrize("name", FAMILIES)
def test_a_family_sweeps_and_profiles_only_what_it_serves(name, tmp_path):
    family = FAMILIES[name]
    served = models_to_load([name], tmp_path)
    assert family.plans and family.evaluation
    for plan in family.plans.values():
        assert plan.entry in served and plan.swept in served and plan.variants[0].name == "untuned"
        assert plan.inputs in families.input_sets()
    if family.gpu_profile:
        assert family.gpu_profile.plan in family.plans and family.gpu_profile.head in ("mean_pool_l2", "logits")


@pytest.fixture
def toy_module(tmp_path, monkeypatch):
    """A family module placed beside the built-in ones (a folder added to the package's path)."""
    monkeypatch.setattr(export_package, "__path__", [*export_package.__path__, str(tmp_path)])
    yield lambda module, family=None: (tmp_path / f"{module}.py").write_text(TOY.format(name=family or module))
    for module in ("toy", "toy_copy"):
        sys.modules.pop(f"tritonrepo.export.{module}", None)


def test_a_new_family_is_one_module_that_the_registry_finds(toy_module, monkeypatch, tmp_path):
    """Its specs are rendered, checked and loaded with what they need, its plans swept: no other file names it."""
    toy_module("toy")
    found = families.discover()
    assert list(found)[:4] == ["sbert", "ner", "rerank", "transnetv2"] and list(found)[-1] == "toy"
    monkeypatch.setattr(families, "FAMILIES", found)
    assert families.sweep_plans()["toy"].entry == "toy" and "sbert_int8" in families.sweep_plans()
    assert families.spec("toy_encoder").deployment("cpu").count == 2
    inputs = sweep.write_inputs(families.sweep_plans()["toy"], tmp_path / "inputs.json", limit=3)
    assert json.loads(inputs.read_text())["data"] == [{"TEXT": {"content": ["toy"], "shape": [1]}}] * 3
    assert models_to_load(["toy"], tmp_path) == ["toy", "toy_encoder", "toy_tokenizer"]
    repository = tmp_path / "repository"
    written = render.write(repository, families.all_specs(tmp_path))
    assert {f"toy/configs/{t}.pbtxt" for t in TARGETS} <= set(written)
    assert not [f for f in check.lint(repository) if f.level == "error"]


def test_two_family_modules_with_one_name_are_refused(toy_module):
    toy_module("toy")
    toy_module("toy_copy", family="toy")
    with pytest.raises(TritonRepoError, match="share a name"):
        families.discover()


def test_export_options_configure_the_training_of_the_family_that_trains(tmp_path):
    ner = FAMILIES["ner"].configured(tmp_path, epochs=0.5, max_steps=None, lowercase_fraction=0.2)
    assert (ner.training.epochs, ner.training.lowercase_fraction) == (0.5, 0.2)
    assert ner.training.max_steps == FAMILIES["ner"].config().training.max_steps  # None: the recipe's
    assert (ner.training.out_dir, ner.out_dir) == (tmp_path / "model", tmp_path / "export")
    assert FAMILIES["rerank"].configured(lr=1e-5).out_dir == FAMILIES["rerank"].config().out_dir
    assert FAMILIES["sbert"].configured(epochs=None) == FAMILIES["sbert"].config()
    with pytest.raises(TritonRepoError, match="rerank's training has no --lowercase-fraction"):
        FAMILIES["rerank"].configured(lowercase_fraction=0.2)
    with pytest.raises(TritonRepoError, match="sbert trains no model: --epochs, --out do not apply"):
        FAMILIES["sbert"].configured(tmp_path, epochs=1.0)
