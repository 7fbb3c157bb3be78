"""The registry of built-in model families: what each serves covers every built-in model."""

from tritonrepo.export.families import FAMILIES, models_to_load
from tritonrepo.models import all_specs


def test_the_families_serve_every_built_in_model(tmp_path):
    assert models_to_load(FAMILIES, tmp_path) == sorted(s.name for s in all_specs())  # tmp_path: no added models
    assert models_to_load(["transnetv2"], tmp_path) == ["transnetv2", "transnetv2_int8", "video_decode",
                                                        "video_shots", "video_shots_live"]  # BLS callees included
    assert "ner_tokenizer" in models_to_load(["ner"], tmp_path) and "rerank" not in models_to_load(["ner"], tmp_path)
