"""The repository on disk: Python-backend code into version folders. (`tritonrepo build`, which also renders the
configs and exports and installs the artifacts, and what a model needs loaded beside it, are ``export/families.py``.)"""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

from .specs import AnySpec, ModelSpec

ENSEMBLES_SRC = Path(__file__).resolve().parents[1] / "ensembles"


def server_side_modules(module: str) -> list[str]:
    """``module`` and the modules of ensembles/ it imports relatively (``from . import x``, ``from .x import y``),
    transitively, imports inside functions included: what its version folder must hold beside it."""
    found, todo = [], [module]
    while todo:
        name = todo.pop(0)
        if name in found:
            continue
        found.append(name)
        for node in ast.walk(ast.parse((ENSEMBLES_SRC / f"{name}.py").read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                todo += [node.module] if node.module else [alias.name for alias in node.names]
    return found


def install_python_module(version: Path, module: str, filename: str = "model.py") -> list[Path]:
    """Copy ``ensembles/<module>.py`` to ``version/<filename>`` and its helpers beside it under their own names: a
    version folder then runs on the serving image's packages alone (the stub imports ``model.py`` as
    ``<version>.model``, so relative imports resolve inside the folder)."""
    version.mkdir(parents=True, exist_ok=True)
    main, *helpers = server_side_modules(module)
    placed = [version / filename, *(version / f"{h}.py" for h in helpers)]
    for name, dest in zip((main, *helpers), placed):
        shutil.copy2(ENSEMBLES_SRC / f"{name}.py", dest)
    return placed


def install_python_models(repository: Path, specs: list[AnySpec]) -> list[Path]:
    """Install each Python-backend model's module from ensembles/ as <model>/1/model.py, and each DALI pipeline
    module as <model>/1/dali.py (the DALI backend serializes it at load), each with its helpers beside it."""
    placed = []
    for spec in specs:
        if not isinstance(spec, ModelSpec):
            continue
        for module, filename in ((spec.python_model, "model.py"), (spec.dali_pipeline, "dali.py")):
            if module:
                placed += install_python_module(repository / spec.name / "1", module, filename)
    return placed
