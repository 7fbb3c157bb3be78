"""The built-in model families: one registry that render, build, export, check, eval, sweep, packaging and the GPU
profile iterate.

A family is a module of this package (``export/<name>.py``) that declares a ``FAMILY`` (``family.py``): its models'
specs, export + validation, install, the models it serves, its sweep plans, its evaluation and its GPU-profile inputs.
Models added with ``tritonrepo add`` are read from their spec files (``tritonrepo/added.py``) and built
(``export/added.py``) after the families.
"""

from __future__ import annotations

import logging
import pkgutil
from collections.abc import Callable
from importlib import import_module
from pathlib import Path

from tritonrepo import deployable, render, specs
from tritonrepo.added import load_all
from tritonrepo.errors import ToolNotFoundError, TritonRepoError
from tritonrepo.paths import MODEL_REPOSITORY
from tritonrepo.repository import install_python_models
from tritonrepo.specs import AnySpec
from tritonrepo.targets import TARGETS
from tritonrepo.tuning import SweepPlan, with_tuning

from .added import install_all
from .family import Family

log = logging.getLogger(__name__)


def discover() -> dict[str, Family]:
    """Every module of this package that declares a ``FAMILY``, by its order."""
    found = []
    for module in pkgutil.iter_modules(import_module(__package__).__path__):
        family = getattr(import_module(f"{__package__}.{module.name}"), "FAMILY", None)
        if isinstance(family, Family):
            found.append(family)
    names = [f.name for f in found]
    if len(set(names)) != len(names):
        raise TritonRepoError(f"two model families share a name: {sorted(names)}")
    return {f.name: f for f in sorted(found, key=lambda f: f.order)}


FAMILIES: dict[str, Family] = discover()


def all_specs(repository: Path = MODEL_REPOSITORY) -> list[AnySpec]:
    """Every model of the repository: the families' and those added to it with `tritonrepo add` (its
    ``<name>/model.yaml``), with the tuned variants of perf/tuned/ applied."""
    built_in = [s for f in FAMILIES.values() for s in f.specs]
    return with_tuning(built_in + [s for m in load_all(repository) for s in m.specs()])


def spec(name: str, repository: Path = MODEL_REPOSITORY) -> AnySpec:
    specs = all_specs(repository)
    for s in specs:
        if s.name == name:
            return s
    raise KeyError(f"no model named {name!r}; known: {[s.name for s in specs]}")


def with_dependencies(names, repository: Path = MODEL_REPOSITORY) -> list[str]:
    """The models and what they need loaded beside them (ensemble steps and BLS callees), sorted."""
    return specs.with_dependencies(all_specs(repository), names)


def sweep_plans() -> dict[str, SweepPlan]:
    """Every family's sweep plans by name."""
    return {name: plan for f in FAMILIES.values() for name, plan in f.plans.items()}


def input_sets() -> dict[str, Callable[[SweepPlan, int, Path], list[dict]]]:
    """Every family's sweep input sets by name."""
    return {name: rows for f in FAMILIES.values() for name, rows in f.inputs.items()}


def models_to_load(families, repository: Path) -> list[str]:
    """What a server loads to serve these families (names): the models their clients call and what those need."""
    return with_dependencies([m for name in families for m in FAMILIES[name].serves], repository)


def build(repository: Path, *, force_export: bool = False, configs: dict | None = None,
          families: tuple[str, ...] | None = None) -> dict:
    """Render configs, export + validate every family (cached), install code and artifacts, then the added models.
    ``configs``: export configs by family name (e.g. a brief NER recipe); the others use their full recipes.
    ``families``: only these, and no added models: a partial repository, to be served with explicit model control
    (the main job's first part needs no training). A whole build refuses to finish a repository that a target's
    configs would not load from. Returns the export reports."""
    chosen = FAMILIES if families is None else {name: FAMILIES[name] for name in families}
    configs = {name: (configs or {}).get(name) or f.config() for name, f in chosen.items()}
    every = all_specs(repository)
    render.write(repository, every)
    install_python_models(repository, every)
    reports = {name: f.export(configs[name], force=force_export) for name, f in chosen.items()}
    for name, f in chosen.items():
        f.install(repository, configs[name])
    for s in every:  # ensembles need an (empty) version folder
        (repository / s.name / "1").mkdir(parents=True, exist_ok=True)
    if families is not None:
        return reports
    reports["added"] = install_all(repository, repository)  # models of `tritonrepo add`, from their sources
    problems = [f for target in TARGETS for f in deployable.check(repository, target)]
    if problems:
        raise ToolNotFoundError("repository incomplete after build:\n" + "\n".join(
            f"{f.model} ({f.where}): {f.message}" for f in problems))
    log.info("model repository ready at %s", repository)
    return reports
