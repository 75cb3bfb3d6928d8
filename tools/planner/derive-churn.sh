#!/usr/bin/env bash
# Re-derives the capacity planner's churn table (planner/data/churn-smollm2.json) from scratch:
# records two SmolLM2 attention traces of about 8K tokens over held-out licence texts (never used
# to train the shipped predictor), then replays them through every policy and budget
# (`foresight plan-churn`). The worker's pool misses count after POOL_WARMUP decode steps, the
# steady state of a long decode; the traces hold DECODE steps so that DECODE - POOL_WARMUP remain.
# About 40 minutes on 2 shared vCPUs.
#
#   tools/planner/derive-churn.sh [OUT]   (default: planner/data/churn-smollm2.json)
#
# Environment: FORESIGHT (default build/bin/foresight), WORK (default a temp dir, kept; traces
# already there are reused), DECODE (dense decode steps per trace, default 160), POOL_WARMUP
# (default 32).
set -euo pipefail
cd "$(dirname "$0")/../.."
FORESIGHT=${FORESIGHT:-build/bin/foresight}
OUT=${1:-planner/data/churn-smollm2.json}
WORK=${WORK:-$(mktemp -d /tmp/foresight-churn.XXXXXX)}
DECODE=${DECODE:-160}
POOL_WARMUP=${POOL_WARMUP:-32}
LICENSES=/usr/share/common-licenses
# ~36,000 bytes is about 7,700 SmolLM2 tokens: room for the decode steps under the 8,192 context.
cut_doc() { head -c 36000 | sed '$d'; }
cat "$LICENSES/GPL-3" "$LICENSES/LGPL-3" | cut_doc > "$WORK/gpl3_lgpl3.txt"
cat "$LICENSES/MPL-2.0" "$LICENSES/Apache-2.0" "$LICENSES/MPL-1.1" | cut_doc > "$WORK/mpl2_apache2_mpl11.txt"
traces=()
for doc in gpl3_lgpl3 mpl2_apache2_mpl11; do
  trace="$WORK/$doc.trace.safetensors"
  if [[ ! -s "$trace" ]]; then
    OMP_WAIT_POLICY=passive "$FORESIGHT" trace --prompt-file "$WORK/$doc.txt" --decode "$DECODE" --out "$trace" >&2
  fi
  traces+=("$trace")
done
"$FORESIGHT" plan-churn --traces "$(IFS=,; echo "${traces[*]}")" --pool-warmup "$POOL_WARMUP" --out "$OUT"
# The shipped table names its traces relative to the work folder, so re-derivations diff cleanly.
sed -i "s|$WORK/|<WORK>/|g" "$OUT"
echo "churn table: $OUT (traces kept in $WORK)" >&2
