#!/usr/bin/env bash
# The main job: installs, builds, fetches the default model, starts a local deployment (a cache node
# with a RAM and an NVMe tier, two workers with the default model; deploy/local-deployment.sh), runs
# a long-context generation (close to the model's 8K-token context: Debian's license texts) with
# AttentionPredictor sparse attention (its weights are compiled into the binaries) on worker 1, then
# a second request sharing its prefix on worker 2, prints each request's statistics, and stops
# everything.
#   DEMO_POLICY       the workers' decode attention (default ap: AttentionPredictor as served; e.g.
#                     quest, dense); each request's heading names the policy that ran
#   KEEP_RUNNING=1   leave the deployment running at the end (prints how to stop it)
#   FORESIGHT_MODELS models cache (default ~/.cache/foresight/models)
#   DEMO_PROMPT_BYTES size of the shared document (default 33000 bytes, about 7.3K tokens)
#   DEMO_MAX_TOKENS   tokens generated per request (default 48)
#   COLD_CHECK=1      also run request 2's exact prompt cold (no prefix reuse) on worker 2 and print
#                     the time-to-first-token ratio against that (issue 5, acceptance 3)
#   SKIP_BUILD=1      use the binaries already built (FORESIGHT_BIN, default build/bin): no install or build
set -euo pipefail
cd "$(dirname "$0")/.."
# Idle OpenMP threads spin briefly, then sleep (what foresight-worker picks for itself when neither
# variable is set): libgomp's long default spin made decode many times slower on a shared 2-core
# box, and sleeping at once (OMP_WAIT_POLICY=passive) made a lone decode 3x slower
# (docs/benchmarks.md, "OpenMP wait policy"). Either variable set outside wins.
if [ -z "${OMP_WAIT_POLICY:-}" ]; then export GOMP_SPINCOUNT=${GOMP_SPINCOUNT:-10000}; fi
if [ -z "${SKIP_BUILD:-}" ]; then
  bash deploy/install-deps.sh
  bash deploy/build.sh
fi
model=$(bash deploy/fetch-model.sh)
bin=${FORESIGHT_BIN:-build/bin}

work=$(mktemp -d /tmp/foresight-demo.XXXXXX)
deployment="$work/deployment"
cleanup() {
  if [ -z "${KEEP_RUNNING:-}" ]; then
    echo "== Stopping the deployment"
    bash deploy/local-deployment.sh stop --dir "$deployment" --purge >/dev/null || true
    rm -rf "$work"
  fi
}
trap cleanup EXIT

policy=${DEMO_POLICY:-ap}

echo "== Starting a local deployment: cache node (RAM 256MiB + NVMe tier) and two workers ($model, policy $policy)"
bash deploy/local-deployment.sh start --dir "$deployment" --bin "$(cd "$bin" && pwd)" --model "$model" --policy "$policy" \
  --budget 1024 --kv-mode cross-token
w1=$(cat "$deployment/worker1.addr")
w2=$(cat "$deployment/worker2.addr")
node=$(cat "$deployment/node.addr")

# A long document from Debian's base-files (the GPL-3, then the LGPL-3), cut to the size that keeps
# prompt + answer inside SmolLM2's 8,192-token context.
docs=()
for f in /usr/share/common-licenses/GPL-3 /usr/share/common-licenses/LGPL-3 /usr/share/common-licenses/Apache-2.0; do
  [ -r "$f" ] && docs+=("$f")
done
[ ${#docs[@]} -gt 0 ] || { echo "no license texts in /usr/share/common-licenses (base-files)"; exit 1; }
{ cat "${docs[@]}" || true; } | head -c "${DEMO_PROMPT_BYTES:-33000}" > "$work/document.txt"  # cat ends on SIGPIPE
{ cat "$work/document.txt"; printf '\n\nIn one sentence, what does this license require of people who distribute the software?\n'; } \
  > "$work/request1.txt"
{ cat "$work/document.txt"; printf '\n\nIn one sentence, may I charge money for copies of the software?\n'; } \
  > "$work/request2.txt"
max_tokens=${DEMO_MAX_TOKENS:-48}

# Runs one request, then prints its text and statistics under a heading naming the policy that ran
# (the worker's reply says which).
request() {  # name worker prompt_file [extra flags]
  local name="$1" worker="$2" prompt="$3"
  shift 3
  "$bin/foresight" generate --worker "$worker" --prompt-file "$prompt" --chat --max-tokens "$max_tokens" --json --print-tokens "$@" \
    > "$work/$name.json"
  python3 - "$work/$name.json" "$name" "$worker" "$(wc -c <"$prompt")" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
name, worker, prompt_bytes = sys.argv[2:5]
described = {"dense": "dense decode (every block)",
             "ap": "AttentionPredictor-guided sparse decode, as served (query-refined)",
             "attention_predictor": "AttentionPredictor-guided sparse decode (the published method)"}
policy = r["policy"]
if policy in described:
    how = described[policy]
elif policy.startswith("ap("):
    how = "AttentionPredictor-guided sparse decode (query-refined)"
else:
    how = f"{policy} sparse decode"
extra = f", weights {r['weights']}" if r.get("weights") else ""
budget = f", budget {r['budget']}" if policy != "dense" else ""
print(f"== {name}: worker {worker}, {prompt_bytes} bytes of prompt, {how} (policy {policy}{budget}{extra})")
print("   " + r["text"].strip().replace("\n", "\n   "))
print(f"   prompt {r['prompt_tokens']} tokens: prefix hit {r['prefix_hit_tokens']} (imported from the cache service), "
      f"prefilled {r['prefill_tokens']}")
print(f"   time to first token {r['time_to_first_token_seconds']:.2f} s (prefix import {r['prefix_import_seconds']:.2f} s); "
      f"prefill {r['prefill_tokens_per_second']:.0f} tok/s; decode {r['decode_tokens_per_second']:.1f} tok/s "
      f"({r['generated_tokens']} tokens, policy {r['policy']}, budget {r['budget']}, KV {r['kv_mode']})")
print(f"   fetched {r['blocks_fetched']} blocks ({r['bytes_fetched'] / 2**20:.1f} MiB); published {r['blocks_published']} "
      f"blocks ({r['bytes_published'] / 2**20:.1f} MiB); stalls {r['stalls']} ({r['stall_seconds'] * 1e3:.1f} ms); "
      f"attended {r['blocks_attended_per_step']:.0f} of {r['blocks_total_per_step']:.0f} blocks per step")
EOF
}
request request1 "$w1" "$work/request1.txt"
request request2 "$w2" "$work/request2.txt"
python3 - "$work/request1.json" "$work/request2.json" <<'EOF'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:])
ratio = a["time_to_first_token_seconds"] / max(b["time_to_first_token_seconds"], 1e-9)
print(f"== Shared prefix: request 2 reached its first token {ratio:.1f}x sooner than request 1's cold prefill "
      f"({b['time_to_first_token_seconds']:.2f} s vs {a['time_to_first_token_seconds']:.2f} s; "
      f"{b['prefix_hit_tokens']} of {b['prompt_tokens']} prompt tokens imported)")
EOF
if [ -n "${COLD_CHECK:-}" ]; then
  request request2-cold "$w2" "$work/request2.txt" --no-prefix-reuse
  python3 - "$work/request2-cold.json" "$work/request2.json" <<'EOF'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:])
ratio = a["time_to_first_token_seconds"] / max(b["time_to_first_token_seconds"], 1e-9)
ta, tb = a["tokens"], b["tokens"]
first_diff = next((i for i in range(min(len(ta), len(tb))) if ta[i] != tb[i]), None)
same = ("the same generated tokens" if ta == tb else
        f"DIFFERENT tokens from token {first_diff if first_diff is not None else min(len(ta), len(tb))} on")
print(f"== Same prompt, cold on the same worker: {a['time_to_first_token_seconds']:.2f} s to the first token; "
      f"with the shared prefix {b['time_to_first_token_seconds']:.2f} s: {ratio:.1f}x sooner; {same}")
EOF
fi
echo "== The cache node after both requests"
"$bin/foresight" --cache "$node" stat

if [ -n "${KEEP_RUNNING:-}" ]; then
  echo "== Deployment left running in $deployment; workers at $w1 and $w2, node at $node"
  echo "   generate: $bin/foresight generate --worker $w1 --prompt \"...\" --chat"
  echo "   stop it:  bash deploy/local-deployment.sh stop --dir $deployment --purge"
fi
