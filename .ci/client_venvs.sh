#!/usr/bin/env bash
# Builds the real-client virtual environments that tests/test_clients.py drives (idempotent):
#   .venv-tasklib/    TFLite Task Library: tflite-support 0.4.4 pins protobuf 3.20, which
#                     cannot share .venv with TF 2.21 / apache-beam (protobuf 6)
#   .venv-mediapipe/  MediaPipe Tasks
# A venv is reused once its .built marker exists (written last); delete the folder to rebuild.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

# tflite-support's native library links libusb-1.0 (for the Edge TPU delegate).
if ! ldconfig -p 2>/dev/null | grep -q 'libusb-1.0.so.0'; then
  if command -v apt-get >/dev/null; then
    SUDO=$([ "$(id -u)" = 0 ] && echo "" || echo sudo)
    $SUDO apt-get install -y -q libusb-1.0-0 >/dev/null 2>&1 \
      || { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q libusb-1.0-0 >/dev/null; }
  else
    echo "client_venvs.sh: install libusb-1.0 (tflite-support's native library needs it)" >&2
    exit 1
  fi
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
