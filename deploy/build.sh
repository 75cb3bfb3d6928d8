#!/usr/bin/env bash
# Configures and builds Foresight into build/ (binaries in build/bin/).
#   BUILD_TYPE  CMake build type (default RelWithDebInfo)
#   JOBS        parallel jobs (default: number of cores)
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build -DCMAKE_BUILD_TYPE="${BUILD_TYPE:-RelWithDebInfo}" >/dev/null
cmake --build build -j "${JOBS:-$(nproc)}"
