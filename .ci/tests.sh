#!/usr/bin/env bash
# Builds the test environments on a fresh machine and runs every tier (the README's test
# command, so what CI runs):
#   .venv-quickstart  exactly the quick start's `pip install .`, plus the test tools (the [test]
#                     extra): the core tests run on the versions a user gets
#   .venv             the developers' venv with every extra: the interop, backends, Beam and
#                     ONNX tests (Beam pins older protobuf and numpy than the quick start
#                     gets), then, timed on their own, the GPU-delegate and Spark jobs (the
#                     Spark tests start a standalone cluster on localhost)
#   .venv-tasklib, .venv-mediapipe  the real Android-side clients (.ci/client_venvs.sh)
# A venv that exists is updated, not rebuilt. Exits non-zero on any failure, including a
# pytest run that collected no test (exit 5).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
EXTRAS="interop or backends or beam or onnx or clients"
OWN="gpu_delegate or spark"  # jobs that report their own time: a GPU delegate, a Spark cluster
JOBS=${PYTEST_JOBS:-2}
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
start=$SECONDS

pip_in() {  # pip_in VENV ARGS...: create VENV if needed, then pip install ARGS into it
  local dir=$1; shift
  [ -x "$dir/bin/python" ] || "$PY" -m venv "$dir"
  "$dir/bin/pip" install -q --disable-pip-version-check "$@"
}

# The Spark cluster tests run Spark's JVM: a JDK 17+ from Debian when there is no java.
if ! command -v java >/dev/null; then
  SUDO=$([ "$(id -u)" = 0 ] && echo "" || echo sudo)
  { $SUDO apt-get install -y -q openjdk-17-jre-headless >/dev/null 2>&1 \
    || { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q openjdk-17-jre-headless \
         >/dev/null; }; } || { echo "tests.sh: install a JDK 17+ (java) for the Spark tests" >&2; exit 1; }
fi

# The quick start installs from a copy of the tree, so that its build does not race the
# editable install's in the same folder.
src="$logs/src"
mkdir "$src"
tar --exclude='./.venv*' --exclude=./.git --exclude=./saved_models -cf - . | tar -xf - -C "$src"
pip_in .venv-quickstart "$src[test]" >"$logs/quickstart.log" 2>&1 &
quickstart=$!
pip_in .venv -e ".[test,interop,backends,beam,onnx,spark]" torch==2.13.0 >"$logs/dev.log" 2>&1 &
dev=$!
bash .ci/client_venvs.sh >"$logs/clients.log" 2>&1 &
clients=$!
for job in "quickstart:$quickstart" "dev:$dev" "clients:$clients"; do
  if ! wait "${job#*:}"; then
    echo "tests.sh: building the ${job%%:*} environment failed:" >&2
    tail -n 40 "$logs/${job%%:*}.log" >&2
    exit 1
  fi
done
echo "tests.sh: environments ready in $((SECONDS - start)) s"

.venv/bin/ruff check .
# `pytest`, not `python -m pytest`: the tests import the installed package, not the checkout.
# PYTHONSAFEPATH: child processes started from the checkout import the installed package too.
step() {  # step NAME CMD...: run a test job and say how long it took
  local name=$1 t=$SECONDS; shift
  "$@"
  echo "tests.sh: $name took $((SECONDS - t)) s (at $((SECONDS - start)) s)"
}
step "core tier" env PYTHONSAFEPATH=1 .venv-quickstart/bin/pytest -n "$JOBS" --dist loadfile \
  -p no:cacheprovider -m "not ($EXTRAS or $OWN)"
step "extras tier" .venv/bin/python -m pytest -n "$JOBS" --dist loadfile -p no:cacheprovider \
  -m "($EXTRAS) and not ($OWN)"
step "GPU delegate and Spark cluster" .venv/bin/python -m pytest -n "$JOBS" --dist loadfile \
  -p no:cacheprovider -m "$OWN"
echo "tests.sh: all done in $((SECONDS - start)) s"
