#!/usr/bin/env bash
# The import contracts of pyproject.toml ([tool.importlinter]): layers and no cycles, imports inside functions
# included. The package's subfolders live beside it (package-dir in pyproject.toml), which import-linter cannot
# follow, so it reads a temporary tree that links them into place.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
view="$(mktemp -d)"
trap 'rm -rf "$view"' EXIT
mkdir "$view/tritonrepo"
ln -s "$PWD"/tritonrepo/*.py "$view/tritonrepo/"
for package in export clients services perf ensembles; do ln -s "$PWD/$package" "$view/tritonrepo/$package"; done
cp pyproject.toml "$view/"
cd "$view"  # lint-imports puts the working directory first on sys.path
PYTHONPATH="$view" "$OLDPWD/.venv/bin/lint-imports" pyproject.toml --no-cache "$@"
