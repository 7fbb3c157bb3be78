#!/usr/bin/env bash
# The main job from a fresh clone: set up everything; part 1 (no training): export + validate SBERT and TransNetV2,
# start the real tritonserver, nearest neighbours over real news, the shots of real videos (whole files and a live
# stream), a perf_analyzer probe; part 2: fine-tune NER and the reranker once (cached), then entities in search
# queries, hybrid search, an ingestion run, a perf_analyzer probe; then a short sweep of ner_int8 (the untuned config
# against the tuned one, Poisson arrivals) and a plan of instances for the NER search SLO from that sweep.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
.venv/bin/tritonrepo demo "$@"
.venv/bin/tritonrepo perf sweep ner_int8 --only untuned --only i2-d0-intra_op_threads=1 --measurement-ms 2000 \
    --out-dir .runs/profiles
exec .venv/bin/tritonrepo plan --slo perf/slos/search-ner.yaml --profiles .runs/profiles --report .runs/plan/plan.md
