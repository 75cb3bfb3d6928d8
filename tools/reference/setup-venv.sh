#!/usr/bin/env bash
# Creates the reference virtualenv for the tools in tools/reference (make_golden.py makes the golden
# files the worker's llama.cpp parity tests read; the tests themselves need no venv):
# gguf (GGUF reader) and llama-cpp-python (llama.cpp built from source), pinned in requirements.txt
# to the versions the committed golden files were made with (LLAMA_CPP_PYTHON=... to try another
# llama-cpp-python; then make_golden.py --check compares it with them).
# Usage: tools/reference/setup-venv.sh [VENV_DIR]   (default: <repo>/.venv)
# llama-cpp-python compiles llama.cpp; expect 10-30 minutes on a small box.
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
venv="${1:-$repo/.venv}"
python3 -m venv "$venv"
"$venv/bin/pip" install --upgrade pip
if [ -n "${LLAMA_CPP_PYTHON:-}" ]; then
  CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}" \
    "$venv/bin/pip" install gguf numpy "llama-cpp-python==$LLAMA_CPP_PYTHON"
else
  CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}" \
    "$venv/bin/pip" install -r "$repo/tools/reference/requirements.txt"
fi
echo "reference venv ready: $venv"
