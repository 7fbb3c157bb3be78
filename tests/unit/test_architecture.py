"""The import contracts (pyproject.toml [tool.importlinter], run by scripts/lint_imports.sh, also in the test
command): the tree keeps them, and an import that breaks a layer or closes a cycle, even inside a function, fails."""

import shutil
import subprocess

from tritonrepo.paths import ROOT

PACKAGES = ("tritonrepo", "export", "clients", "services", "perf", "ensembles")


def _lint(root):
    return subprocess.run(["bash", str(root / "scripts" / "lint_imports.sh")], capture_output=True, text=True,
                          timeout=120)


def test_the_tree_keeps_the_layers_and_has_no_import_cycles():
    result = _lint(ROOT)
    assert result.returncode == 0 and "2 kept, 0 broken" in result.stdout, result.stdout + result.stderr


def test_an_upward_import_inside_a_function_breaks_both_contracts(tmp_path):
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__", "*.json"))
    for name in ("pyproject.toml", "scripts/lint_imports.sh"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        shutil.copy(ROOT / name, tmp_path / name)
    (tmp_path / ".venv").symlink_to(ROOT / ".venv")
    with open(tmp_path / "tritonrepo" / "specs.py", "a") as f:  # specs reaching up to the models built on them
        f.write("\n\ndef _probe():\n    from .export.families import all_specs  # noqa: F401\n")
    result = _lint(tmp_path)
    assert result.returncode != 0 and "0 kept, 2 broken" in result.stdout, result.stdout + result.stderr
    assert "tritonrepo.specs is not allowed to import tritonrepo.export" in result.stdout
