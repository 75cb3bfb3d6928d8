#!/usr/bin/env bash
# The test command: installs the Debian packages, builds, and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/install-deps.sh
bash deploy/build.sh
ctest --test-dir build --output-on-failure -j "${TEST_JOBS:-2}" --timeout 900
