#!/usr/bin/env bash
# GPU profiles on a lent GPU host (perf/gpu_profile.py). Run it there, in a copy of this checkout that holds .gpu/
# (made here by `.venv/bin/python -m tritonrepo.perf.gpu_profile pack`, 61 MiB):
#
#     bash scripts/gpu-profile.sh OUT_DIR [BUDGET_S [MODEL ...]]
#
# The host's image has PyTorch and transformers in its python3 (a venv) but no tritonserver. This script changes that
# venv, so run it on a throwaway host only: NumPy goes back to 1.26 (the Python backend stub of the carried Triton
# garbles BYTES tensors with NumPy 2), SciPy and scikit-learn (built for NumPy 2; transformers imports them when they
# are installed) are removed. The client's wheels go to /tmp/site; export/, ensembles/, clients/, services/ and perf/
# are copied into tritonrepo/ (the package layout pyproject.toml maps), for the driver and the Python models alike.
set -euo pipefail
out=${1:?usage: bash scripts/gpu-profile.sh OUT_DIR [BUDGET_S [MODEL ...]]}
budget=${2:-420}
shift $(($# < 2 ? $# : 2))
export TRITONREPO_HOME=$PWD PYTHONUNBUFFERED=1
nvidia-smi -L
python3 -m pip uninstall -y -q scikit-learn scipy || true
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir .gpu/wheels/numpy-*.whl
rm -rf /tmp/site
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site \
    $(ls .gpu/wheels/*.whl | grep -v numpy)
for d in export ensembles clients services perf; do rm -rf "tritonrepo/$d"; cp -r "$d" "tritonrepo/$d"; done
export PYTHONPATH=/tmp/site:$PWD
python3 -m tritonrepo.perf.gpu_profile run --out "$out" --budget-s "$budget" ${1:+--models "$@"}
