#!/usr/bin/env bash
# Builds the real-client virtual environments that tests/test_clients.py and
# tests/test_gpu_delegate.py drive, and a Pillow 12 venv (idempotent), and installs the Debian packages they need:
#   .venv-tasklib/    TFLite Task Library: tflite-support 0.4.4 pins protobuf 3.20, which
#                     cannot share .venv with TF 2.21 / apache-beam (protobuf 6)
#   .venv-mediapipe/  MediaPipe Tasks, also the host of the real TFLite GPU delegate
#   .venv-pillow12/   Pillow 12.x (the other venvs get 13.x): the exact preprocessing's
#                     shortcut is checked under both (tests/test_preprocessing.py)
# A venv is reused once its .built marker exists (written last); delete the folder to rebuild.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

apt_install() {  # apt_install WHY PACKAGE...: install Debian packages (root or sudo)
  local why=$1; shift
  if command -v apt-get >/dev/null; then
    SUDO=$([ "$(id -u)" = 0 ] && echo "" || echo sudo)
    $SUDO apt-get install -y -q "$@" >/dev/null 2>&1 \
      || { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q "$@" >/dev/null; }
  else
    echo "client_venvs.sh: install $* ($why)" >&2
    exit 1
  fi
}

# tflite-support's native library links libusb-1.0 (for the Edge TPU delegate).
if ! ldconfig -p 2>/dev/null | grep -q 'libusb-1.0.so.0'; then
  apt_install "tflite-support's native library needs libusb-1.0" libusb-1.0-0
fi

# tests/test_gpu_delegate.py runs the TFLite GPU delegate's OpenGL ES backend (inside
# MediaPipe) on Mesa's software renderer, llvmpipe, through surfaceless EGL: libglvnd's EGL and
# GLES loaders, Mesa's EGL vendor library and its DRI drivers (llvmpipe is in swrast_dri.so).
GL_PACKAGES=(libegl1 libgles2 libegl-mesa0 libgl1-mesa-dri)
if command -v dpkg-query >/dev/null; then
  missing=()
  for pkg in "${GL_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed' || missing+=("$pkg")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    apt_install "the GPU delegate test runs OpenGL ES on Mesa" "${missing[@]}"
  fi
elif ! ldconfig -p 2>/dev/null | grep -q 'libEGL_mesa.so.0'; then
  echo "client_venvs.sh: install EGL, GLES 2 and Mesa's EGL and DRI drivers (Debian:" \
       "${GL_PACKAGES[*]}); the GPU delegate test runs OpenGL ES on Mesa" >&2
  exit 1
fi

build() {  # build DIR SMOKE_IMPORT PACKAGE...
  local dir=$1 smoke=$2; shift 2
  if [ -f "$dir/.built" ]; then return 0; fi
  rm -rf "$dir"
  "$PY" -m venv "$dir"
  "$dir/bin/pip" install -q --disable-pip-version-check "$@"
  "$dir/bin/python" -c "$smoke"
  "$dir/bin/pip" freeze --disable-pip-version-check > "$dir/.built"
  echo "client_venvs.sh: built $dir ($*)"
}

# tflite-support 0.4.4 (its last release, 2023) has wheels for CPython 3.8-3.11 only.
TASKLIB_PY=${TASKLIB_PYTHON:-}
if [ -z "$TASKLIB_PY" ]; then
  for candidate in "$PY" python3.11 python3.10 python3.9; do
    if command -v "$candidate" >/dev/null \
        && "$candidate" -c 'import sys; sys.exit(not (3, 8) <= sys.version_info[:2] <= (3, 11))'; then
      TASKLIB_PY=$candidate; break
    fi
  done
fi
if [ -z "$TASKLIB_PY" ]; then
  echo "client_venvs.sh: tflite-support 0.4.4 needs CPython 3.8-3.11; set TASKLIB_PYTHON" >&2
  exit 1
fi

PY=$TASKLIB_PY build .venv-tasklib \
  "from tflite_support.task import vision; from tflite_support import metadata" \
  "tflite-support==0.4.4" pillow
build .venv-mediapipe "from mediapipe.tasks.python import vision" "mediapipe==1.2.3" pillow
# The exact path resizes only the crop where Pillow's arithmetic is proven to give the full
# resize's pixels; the rules differ by version, and users may have 12.x or 13.x.
build .venv-pillow12 "import numpy, PIL" "pillow>=12,<13" numpy
