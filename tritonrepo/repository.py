"""Build the model repository: configs from the specs, Python-backend code, validated artifacts from export/."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from . import render
from .errors import ToolNotFoundError
from .models import all_specs
from .specs import AnySpec, Backend, ModelSpec

log = logging.getLogger(__name__)

ENSEMBLES_SRC = Path(__file__).resolve().parents[1] / "ensembles"


def install_python_models(repository: Path, specs: list[AnySpec] | None = None) -> list[Path]:
    """Copy each Python-backend model's module from ensembles/ to <model>/1/model.py, and each DALI pipeline module to
    <model>/1/dali.py (the DALI backend serializes it at load). ``specs``: all of the repository's by default."""
    placed = []
    for spec in all_specs() if specs is None else specs:
        if not isinstance(spec, ModelSpec):
            continue
        for module, filename in ((spec.python_model, "model.py"), (spec.dali_pipeline, "dali.py")):
            if module:
                dest = repository / spec.name / "1" / filename
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ENSEMBLES_SRC / f"{module}.py", dest)
                placed.append(dest)
    return placed


def with_dependencies(names: list[str], repository: Path) -> set[str]:
    """The models and, for those the specs know (the repository's and its added models'), what they need loaded
    beside them, BLS callees included (explicit model control loads an ensemble's steps, not what a model calls)."""
    from .added import load_all
    from .specs import dependencies

    specs = all_specs() + [s for m in load_all(repository) for s in m.specs()]
    known = {s.name for s in specs}
    return set(names).union(*(dependencies(specs, n) for n in names if n in known))


def missing_artifacts(repository: Path, target: str = "cpu") -> list[str]:
    """Files a target's configs expect in the version folders that are not there."""
    missing = []
    for spec in all_specs():
        if not isinstance(spec, ModelSpec):
            (repository / spec.name / "1").mkdir(parents=True, exist_ok=True)  # ensembles need an empty version
            continue
        dep = spec.deployment(target)
        wanted = {Backend.PYTHON: ["model.py"], Backend.DALI: ["dali.py"]}.get(dep.backend, [])
        if dep.model_filename:
            wanted.append(dep.model_filename)
        missing += [f"{spec.name}/1/{f}" for f in wanted if not (repository / spec.name / "1" / f).exists()]
    return missing


def build(repository: Path, *, force_export: bool = False, ner_export=None, transnet_export=None,
          rerank_export=None) -> dict:
    """Render configs, export+validate every model (cached), install code and artifacts. Returns export reports.
    ``ner_export``: a ``tritonrepo.export.ner.NerExport`` (default: the full CoNLL-2003 fine-tuning recipe);
    ``transnet_export``: a ``tritonrepo.export.transnetv2.TransNetExport`` (default: validated on all of test.mp4);
    ``rerank_export``: a ``tritonrepo.export.rerank.RerankExport`` (default: the full headline -> article recipe)."""
    from .export import added, ner, rerank, sbert, transnetv2

    render.write(repository, all_specs())
    install_python_models(repository)
    ner_cfg = ner_export or ner.NerExport()
    shots_cfg = transnet_export or transnetv2.TransNetExport()
    rerank_cfg = rerank_export or rerank.RerankExport()
    reports = {"sbert": sbert.export(force=force_export), "ner": ner.export(ner_cfg, force=force_export),
               "rerank": rerank.export(rerank_cfg, force=force_export),
               "transnetv2": transnetv2.export(shots_cfg, force=force_export)}
    sbert.install(repository)
    ner.install(repository, ner_cfg.out_dir)
    rerank.install(repository, rerank_cfg.out_dir)
    transnetv2.install(repository, shots_cfg.out_dir)
    reports["added"] = added.install_all(repository, repository)  # models of `tritonrepo add`, from their sources
    missing = missing_artifacts(repository)
    if missing:
        raise ToolNotFoundError(f"repository incomplete after build, missing: {missing}")
    log.info("model repository ready at %s", repository)
    return reports
