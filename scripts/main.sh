#!/usr/bin/env bash
# The main job from a fresh clone: set up everything, then export + validate the models (NER is fine-tuned once),
# build the repository, start the real tritonserver, embed real news sentences, print nearest neighbours, entities in
# search queries, the shots of real videos (whole files and a live stream) and a short perf_analyzer probe; then a short sweep of ner_int8 (the untuned config against the
# tuned one, closed loop and Poisson arrivals) and a plan of instances for the NER search SLO from that sweep.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
.venv/bin/tritonrepo demo "$@"
.venv/bin/tritonrepo perf sweep ner_int8 --only untuned --only i2-d0-intra_op_threads=1 --measurement-ms 2000 \
    --out-dir .runs/profiles
exec .venv/bin/tritonrepo plan --slo perf/slos/search-ner.yaml --profiles .runs/profiles --report .runs/plan/plan.md
