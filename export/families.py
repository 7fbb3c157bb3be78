"""The built-in model families, in build order: one registry that `tritonrepo build` and `tritonrepo export` iterate.

A family is a module of this package (``export/<name>.py``) with an export config dataclass whose ``out_dir`` holds
the validated artifacts, ``export(config, force=...)`` (train if needed, export, validate; cached by fingerprint) and
``install(repository, artifacts)``. Models added with ``tritonrepo add`` are built from their spec files
(``export/added.py``) after the families.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path

from tritonrepo import deployable, render
from tritonrepo.errors import ToolNotFoundError
from tritonrepo.models import all_specs
from tritonrepo.repository import install_python_models, with_dependencies
from tritonrepo.targets import TARGETS

from .added import install_all

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Family:
    name: str
    config_class: str  # the family module's export config (its defaults are the full recipe)
    serves: tuple[str, ...]  # the models clients call; a server loads them with what they need (with_dependencies)

    @property
    def module(self):
        return import_module(f"{__package__}.{self.name}")  # torch and friends load only for the families used

    def config(self):
        return getattr(self.module, self.config_class)()

    def export(self, config=None, *, force: bool = False) -> dict:
        return self.module.export(config or self.config(), force=force)

    def install(self, repository: Path, config=None) -> list[Path]:
        return self.module.install(repository, (config or self.config()).out_dir)


FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("sbert", "SbertExport", ("sbert", "sbert_int8")),
    Family("ner", "NerExport", ("ner", "ner_int8")),
    Family("rerank", "RerankExport", ("rerank", "rerank_int8")),
    Family("transnetv2", "TransNetExport", ("video_shots", "video_shots_live")),
)}


def models_to_load(families, repository: Path) -> list[str]:
    """What a server loads to serve these families (names): the models their clients call and what those need."""
    return sorted(with_dependencies([m for name in families for m in FAMILIES[name].serves], repository))


def build(repository: Path, *, force_export: bool = False, configs: dict | None = None,
          families: tuple[str, ...] | None = None) -> dict:
    """Render configs, export + validate every family (cached), install code and artifacts, then the added models.
    ``configs``: export configs by family name (e.g. a brief NER recipe); the others use their full recipes.
    ``families``: only these, and no added models: a partial repository, to be served with explicit model control
    (the main job's first part needs no training). A whole build refuses to finish a repository that a target's
    configs would not load from. Returns the export reports."""
    chosen = FAMILIES if families is None else {name: FAMILIES[name] for name in families}
    configs = {name: (configs or {}).get(name) or f.config() for name, f in chosen.items()}
    render.write(repository, all_specs())
    install_python_models(repository)
    reports = {name: f.export(configs[name], force=force_export) for name, f in chosen.items()}
    for name, f in chosen.items():
        f.install(repository, configs[name])
    for spec in all_specs():  # ensembles need an (empty) version folder
        (repository / spec.name / "1").mkdir(parents=True, exist_ok=True)
    if families is not None:
        return reports
    reports["added"] = install_all(repository, repository)  # models of `tritonrepo add`, from their sources
    problems = [f for target in TARGETS for f in deployable.check(repository, target)]
    if problems:
        raise ToolNotFoundError("repository incomplete after build:\n" + "\n".join(
            f"{f.model} ({f.where}): {f.message}" for f in problems))
    log.info("model repository ready at %s", repository)
    return reports
