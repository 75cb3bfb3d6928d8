#!/usr/bin/env bash
# Re-derives the capacity planner's churn table (planner/data/churn-smollm2.json) from scratch, on
# every licence text of /usr/share/common-licenses long enough for a 7.5K-token context but the one
# tools/planner/validate-plan.sh checks the table on (GPL-3 + LGPL-3): MPL-2.0 + Apache-2.0 +
# MPL-1.1 (held out of the shipped predictor's training), GFDL-1.3 + LGPL-2.1 and GPL-2 + Artistic
# + GFDL-1.2 (its training texts):
#   - the policies the worker serves with offload (SERVED, default ap and quest) are measured on
#     the worker itself: `foresight-bench decode --modes cross-token --no-reuse --greedy` decodes
#     each document's greedy continuation with KV on a cache node and counts the (layer, block, KV
#     head) units it fetched per token, with reuse (what its resident pool missed) and without (the
#     whole selection), over decode steps POOL_WARMUP to DECODE - 1;
#   - the others are replayed (`foresight plan-churn`) from attention traces of the same documents
#     (`foresight trace`, DECODE dense decode steps), as is the node's RAM LRU simulation.
# About 70 minutes on 2 shared vCPUs (each served decode about 2 minutes, each trace 2-4, the replay
# about 10).
#
#   tools/planner/derive-churn.sh [OUT]   (default: planner/data/churn-smollm2.json)
#
# Environment: BIN (default build/bin), WORK (default a temp dir, kept; traces and decode runs
# already there are reused), DECODE (decode steps, default 160), POOL_WARMUP (default 32), CONTEXT
# (prompt tokens of the served decodes, default 7500), SERVED (default "ap quest"), BUDGETS
# (default "256 512 1024 2048").
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${BIN:-build/bin}
OUT=${1:-planner/data/churn-smollm2.json}
WORK=${WORK:-$(mktemp -d /tmp/foresight-churn.XXXXXX)}
mkdir -p "$WORK"
DECODE=${DECODE:-160}
POOL_WARMUP=${POOL_WARMUP:-32}
CONTEXT=${CONTEXT:-7500}
SERVED=${SERVED:-ap quest}
BUDGETS=${BUDGETS:-256 512 1024 2048}
LICENSES=/usr/share/common-licenses
# ~36,000 bytes is about 7,500-8,000 SmolLM2 tokens: room for the decode steps under the 8,192 context.
cut_doc() { head -c 36000 | sed '$d'; }
cat "$LICENSES/MPL-2.0" "$LICENSES/Apache-2.0" "$LICENSES/MPL-1.1" | cut_doc > "$WORK/mpl2_apache2_mpl11.txt"
cat "$LICENSES/GFDL-1.3" "$LICENSES/LGPL-2.1" | cut_doc > "$WORK/gfdl13_lgpl21.txt"
cat "$LICENSES/GPL-2" "$LICENSES/Artistic" "$LICENSES/GFDL-1.2" | cut_doc > "$WORK/gpl2_artistic_gfdl12.txt"
DOCS=(mpl2_apache2_mpl11 gfdl13_lgpl21 gpl2_artistic_gfdl12)
served=()
for doc in "${DOCS[@]}"; do
  for policy in $SERVED; do
    for budget in $BUDGETS; do
      run="$WORK/$doc.$policy.$budget.decode.json"
      if [[ ! -s "$run" ]]; then
        # --warmup POOL_WARMUP-1 and one turn whose first step is not measured: steps POOL_WARMUP on.
        OMP_WAIT_POLICY=passive "$BIN/foresight-bench" decode --contexts "$CONTEXT" --modes cross-token --no-reuse \
          --policy "$policy" --budget "$budget" --text "$WORK/$doc.txt" --transport shm --greedy \
          --warmup $((POOL_WARMUP - 1)) --steps $((DECODE - POOL_WARMUP)) --chunk $((DECODE - POOL_WARMUP + 1)) \
          --node-ram 1GiB --json > "$run.part"
        mv "$run.part" "$run"
      fi
      served+=("$run")
    done
  done
done
traces=()
for doc in "${DOCS[@]}"; do
  trace="$WORK/$doc.trace.safetensors"
  if [[ ! -s "$trace" ]]; then
    OMP_WAIT_POLICY=passive "$BIN/foresight" trace --prompt-file "$WORK/$doc.txt" --decode "$DECODE" --out "$trace" >&2
  fi
  traces+=("$trace")
done
"$BIN/foresight" plan-churn --traces "$(IFS=,; echo "${traces[*]}")" --served "$(IFS=,; echo "${served[*]}")" \
  --pool-warmup "$POOL_WARMUP" --out "$OUT"
# The shipped table names its inputs relative to the work folder, so re-derivations diff cleanly.
sed -i "s|$WORK/|<WORK>/|g" "$OUT"
echo "churn table: $OUT (traces and decode runs kept in $WORK)" >&2
