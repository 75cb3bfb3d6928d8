#!/usr/bin/env bash
# Configures and builds Foresight into build/ (binaries in build/bin/); arguments, if any, are the
# targets to build (default: all).
#   BUILD_DIR     the build directory (default build)
#   BUILD_TYPE    CMake build type (default RelWithDebInfo)
#   JOBS          parallel jobs (default: number of cores)
#   FORESIGHT_UCX which UCX to build against (README, "UCX"):
#                   system (default) the system's UCX (Debian 12: 1.13, with InfiniBand/RoCE)
#                   pypi            UCX 1.22 from PyPI, fetched by deploy/fetch-ucx.sh: faster TCP
#                                   gets, slower shared-memory transfers (docs/perf-notes.md), no
#                                   InfiniBand/RoCE; if the fetch fails, the system's UCX, with a
#                                   warning
#                   auto            system on a host with RDMA devices (/sys/class/infiniband),
#                                   else pypi
#                   DIR             a UCX install of your own (DIR/lib/cmake/ucx)
#                 Every process of one deployment must use the same UCX major.minor: 1.13 and
#                 1.22 do not interoperate (a client says so and falls back to gRPC).
set -euo pipefail
cd "$(dirname "$0")/.."
ucx_root=""
ucx="${FORESIGHT_UCX:-system}"
if [ "$ucx" = auto ]; then
  if compgen -G "/sys/class/infiniband/*" >/dev/null; then
    echo "build: this host has RDMA devices: building against the system's UCX (FORESIGHT_UCX=pypi" \
         "for the PyPI one, which cannot use them)" >&2
    ucx=system
  else
    ucx=pypi
  fi
fi
case "$ucx" in
  system) ;;
  pypi)
    if ! ucx_root=$(bash deploy/fetch-ucx.sh); then
      ucx_root=""
      echo "build: WARNING: could not fetch UCX 1.22 from PyPI; building against the system's UCX," \
           "whose TCP gets are slower (README, \"UCX\")" >&2
    fi
    ;;
  *)
    ucx_root="$ucx"
    if [ ! -f "$ucx_root/lib/cmake/ucx/ucx-config.cmake" ]; then
      echo "build: FORESIGHT_UCX=$ucx_root is neither auto, pypi nor system, nor a UCX install (no lib/cmake/ucx/ucx-config.cmake)" >&2
      exit 1
    fi
    ;;
esac
echo "build: UCX: ${ucx_root:-the system UCX}" >&2
dir="${BUILD_DIR:-build}"
cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE="${BUILD_TYPE:-RelWithDebInfo}" -DFORESIGHT_UCX_ROOT="$ucx_root" >/dev/null
cmake --build "$dir" -j "${JOBS:-$(nproc)}" ${1:+--target "$@"}
