#!/usr/bin/env bash
# The test command: installs the Debian packages, builds, and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
# OpenMP threads sleep when idle: busy-waiting made decode many times slower on a shared 2-core
# box (docs/worker.md has the figures).
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
bash deploy/install-deps.sh
bash deploy/build.sh
ctest --test-dir build --output-on-failure -j "${TEST_JOBS:-2}" --timeout 900
