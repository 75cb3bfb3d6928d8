#!/usr/bin/env bash
# Creates (or updates) the Python virtual environment the tests use, with tests/requirements.txt
# installed: Debian 12's Python refuses `pip install` outside one (PEP 668). Needs python3-venv
# (deploy/install-deps.sh) and PyPI.
#   tools/python-env.sh [DIR]   (default: build/python-env; the tests look there)
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${1:-build/python-env}"
requirements=tests/requirements.txt
stamp="$dir/.requirements"
if [ -x "$dir/bin/python" ] && cmp -s "$requirements" "$stamp"; then
  exit 0  # already made from these requirements
fi
python3 -m venv --clear "$dir"
"$dir/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
cp "$requirements" "$stamp"
echo "python-env: $dir ready with $(grep -v '^#' "$requirements" | grep . | paste -sd' ')" >&2
