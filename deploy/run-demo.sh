#!/usr/bin/env bash
# The main job: installs, builds, fetches the default model, starts a local cache node (RAM + NVMe
# tiers) and exercises it, then runs a generation with the default model, and stops everything.
#   KEEP_RUNNING=1   leave the node running at the end (prints how to stop it)
#   FORESIGHT_MODELS models cache (default ~/.cache/foresight/models)
set -euo pipefail
cd "$(dirname "$0")/.."
# OpenMP threads sleep when idle: busy-waiting made decode ~12x slower on a shared 2-core box
# (docs/worker.md).
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
bash deploy/install-deps.sh
bash deploy/build.sh
model=$(bash deploy/fetch-model.sh)
bin=build/bin

work=$(mktemp -d /tmp/foresight-demo.XXXXXX)
node_pid=""
cleanup() {
  if [ -n "$node_pid" ] && [ -z "${KEEP_RUNNING:-}" ]; then
    kill -TERM "$node_pid" 2>/dev/null || true
    wait "$node_pid" 2>/dev/null || true
    rm -rf "$work"
  fi
}
trap cleanup EXIT

echo "== Starting a cache node: 256MiB RAM, NVMe tier in $work/nvme"
"$bin/foresight-cached" --listen 127.0.0.1:0 --ram-bytes 256MiB --nvme-dir "$work/nvme" \
  --metrics 127.0.0.1:0 >"$work/node.out" 2>"$work/node.log" &
node_pid=$!
for _ in $(seq 1 100); do
  grep -q READY "$work/node.out" 2>/dev/null && break
  sleep 0.1
done
addr=$(sed -n 's/^READY grpc=\([^ ]*\) .*/\1/p' "$work/node.out")
[ -n "$addr" ] || { echo "node did not start:"; cat "$work/node.log"; exit 1; }
echo "   node at $addr (log: $work/node.log)"
cli() { "$bin/foresight" --cache "$addr" "$@"; }

echo "== put / get / stat"
head -c 3000000 "$model" > "$work/chunk.bin"
split -b 1000000 -d "$work/chunk.bin" "$work/part."
for p in "$work"/part.*; do cli put "demo/$(basename "$p")" "$p"; done
cli get demo/part.01 "$work/back.bin"
cmp "$work/back.bin" "$work/part.01" && echo "   round trip intact"
cli ls --limit 10
cli stat

if "$bin/foresight" --help 2>/dev/null | grep -qE "^ +generate"; then
  echo "== Generating with the default model ($model)"
  printf '%s\n' "Explain in two sentences why caching the attention keys and values speeds up text generation." \
    > "$work/prompt.txt"
  "$bin/foresight" generate --model "$model" --prompt-file "$work/prompt.txt" --chat --max-tokens 64
  if [ -r /usr/share/common-licenses/GPL-3 ]; then
    # The published predictor weights, where the reference data sits beside the checkout; else Quest.
    weights="$(pwd)/../shared/reference/attention_predictor/cnn_llama3.1.safetensors"
    policy=(--policy ap --weights "$weights")
    [ -r "$weights" ] || policy=(--policy quest)
    echo "== Long prompt (the start of the GPL-3 text), sparse decode (${policy[1]}), budget 512 tokens"
    { head -c 9000 /usr/share/common-licenses/GPL-3; printf '\n\nIn one sentence, what does this license require?\n'; } \
      > "$work/long.txt"
    "$bin/foresight" generate --model "$model" --prompt-file "$work/long.txt" --chat --max-tokens 48 \
      --budget 512 "${policy[@]}"
  fi
fi

if [ -n "${KEEP_RUNNING:-}" ]; then
  echo "== Node left running: pid $node_pid at $addr; stop it with: kill $node_pid"
else
  echo "== Stopping the node"
fi
