#!/usr/bin/env bash
# The main job from a fresh clone: set up everything, then export + validate the models (NER is fine-tuned once),
# build the repository, start the real tritonserver, embed real news sentences, print nearest neighbours, entities in
# search queries and a short perf_analyzer probe; finally plan instances for the example SLOs from the committed
# CPU profiles.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
.venv/bin/tritonrepo demo "$@"
exec .venv/bin/tritonrepo plan --slo perf/slos/example.yaml
