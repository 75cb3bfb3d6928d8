#!/usr/bin/env bash
# Creates the reference virtualenv used by the worker's comparison tests:
# gguf (GGUF reader) and llama-cpp-python (llama.cpp built from source).
# Usage: tools/reference/setup-venv.sh [VENV_DIR]   (default: <repo>/.venv)
# llama-cpp-python compiles llama.cpp; expect 10-30 minutes on a small box.
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
venv="${1:-$repo/.venv}"
python3 -m venv "$venv"
"$venv/bin/pip" install --upgrade pip
CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}" \
  "$venv/bin/pip" install gguf numpy llama-cpp-python
echo "reference venv ready: $venv"
