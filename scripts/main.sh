#!/usr/bin/env bash
# The main job from a fresh clone: set up everything, then export + validate the models, build the repository,
# start the real tritonserver, embed real news sentences, print nearest neighbours and a short perf_analyzer probe.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
exec .venv/bin/tritonrepo demo "$@"
