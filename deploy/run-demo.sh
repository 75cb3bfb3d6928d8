#!/usr/bin/env bash
# The main job: installs, builds, fetches the default model, starts a local deployment (a cache node
# with a RAM and an NVMe tier, two workers with the default model; deploy/local-deployment.sh), and
# talks to it as any OpenAI client would, through the workers' HTTP API (streamed chat completions;
# the client is deploy/lib/demo_requests.py, standard library only):
#   1. a long-context request (close to the model's 8K-token context: Debian's license texts) with
#      AttentionPredictor sparse attention (its weights are compiled into the binaries) on worker 1,
#      which prefills the document and publishes its KV to the cache node;
#   2. a second question about the same document on worker 2, which imports that prefix instead of
#      prefilling it;
#   3. several more questions at once on worker 1, which runs them in one batch;
# printing each answer and its statistics, then stops everything.
#   DEMO_POLICY       the workers' decode attention (default ap: AttentionPredictor as served; e.g.
#                     quest, dense); each request's heading names the policy that ran
#   DEMO_CONCURRENT   requests sent at once in step 3 (default 4; 0 skips it)
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
url1=$(cat "$deployment/worker1.url")
url2=$(cat "$deployment/worker2.url")
node=$(cat "$deployment/node.addr")

# A long document from Debian's base-files (the GPL-3, then the LGPL-3), cut to the size that keeps
# prompt + answer inside SmolLM2's 8,192-token context.
docs=()
for f in /usr/share/common-licenses/GPL-3 /usr/share/common-licenses/LGPL-3 /usr/share/common-licenses/Apache-2.0; do
  [ -r "$f" ] && docs+=("$f")
done
[ ${#docs[@]} -gt 0 ] || { echo "no license texts in /usr/share/common-licenses (base-files)"; exit 1; }
{ cat "${docs[@]}" || true; } | head -c "${DEMO_PROMPT_BYTES:-33000}" > "$work/document.txt"  # cat ends on SIGPIPE
max_tokens=${DEMO_MAX_TOKENS:-48}
client=(python3 deploy/lib/demo_requests.py)
question1="In one sentence, what does this license require of people who distribute the software?"
question2="In one sentence, may I charge money for copies of the software?"

"${client[@]}" one --url "$url1" --name "request 1 (worker 1, cold)" --document "$work/document.txt" \
  --question "$question1" --max-tokens "$max_tokens" --out "$work/request1.json"
"${client[@]}" one --url "$url2" --name "request 2 (worker 2, the same document)" --document "$work/document.txt" \
  --question "$question2" --max-tokens "$max_tokens" --out "$work/request2.json"
"${client[@]}" compare "$work/request1.json" "$work/request2.json" \
  --title "Shared prefix: request 2 on worker 2 reused worker 1's prefill"
if [ -n "${COLD_CHECK:-}" ]; then
  "${client[@]}" one --url "$url2" --name "request 2 again, cold (no prefix reuse)" --document "$work/document.txt" \
    --question "$question2" --max-tokens "$max_tokens" --no-prefix-reuse --out "$work/request2-cold.json"
  "${client[@]}" compare "$work/request2-cold.json" "$work/request2.json" --same-prompt \
    --title "Same prompt, cold on the same worker, against request 2"
fi
concurrent=${DEMO_CONCURRENT:-4}
if [ "$concurrent" -gt 0 ]; then
  questions=("Who is the author of this license?" "What does the license say about patents?"
             "Can I use this software in a commercial product?" "What must I do when I distribute modified copies?"
             "Does the license come with any warranty?" "What is Corresponding Source?"
             "What happens if I violate the license?" "Which version of the license applies to later releases?")
  many=()
  for i in $(seq 0 $((concurrent - 1))); do many+=(--question "${questions[i % ${#questions[@]}]}"); done
  "${client[@]}" many --url "$url1" --document "$work/document.txt" "${many[@]}" --max-tokens "$max_tokens" \
    --out "$work/many.json"
fi
echo "== The cache node after every request"
"$bin/foresight" --cache "$node" stat

if [ -n "${KEEP_RUNNING:-}" ]; then
  echo "== Deployment left running in $deployment; the workers' OpenAI API at $url1 and $url2, node at $node"
  echo "   curl -s $url1/chat/completions -H 'Content-Type: application/json' \\"
  echo "     -d '{\"messages\": [{\"role\": \"user\", \"content\": \"...\"}], \"max_tokens\": 64}'"
  echo "   stop it:  bash deploy/local-deployment.sh stop --dir $deployment --purge"
fi
