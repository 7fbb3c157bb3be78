#!/usr/bin/env bash
# The test command from a fresh clone: set up, check the committed configs against the specs, run every test
# (unit + server tests against the real tritonserver; GPU tests skip without a GPU).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
.venv/bin/tritonrepo render --check
bash scripts/lint_imports.sh  # the layers and no import cycles (pyproject.toml [tool.importlinter])
exec .venv/bin/python -m pytest "$@"
