#!/usr/bin/env bash
# A local Foresight deployment on one machine: one cache node (RAM + NVMe tiers) and N workers
# (foresight-worker, default model, each serving gRPC and the OpenAI-compatible HTTP API), on
# loopback, ports chosen free at run time, all state (pids, addresses, logs, the NVMe tier) in one
# directory. A person can start it and keep it running.
#
#   deploy/local-deployment.sh start  [--dir DIR] [--bin DIR] [--workers N] [--model M] [--policy P]
#                                     [--budget TOKENS] [--weights W] [--kv-mode MODE] [--ram SIZE]
#                                     [--nvme SIZE] [--etcd URL] [--threads N]
#   deploy/local-deployment.sh status [--dir DIR]
#   deploy/local-deployment.sh stop   [--dir DIR] [--purge]
#
# Defaults: DIR=$FORESIGHT_DEPLOYMENT_DIR or /tmp/foresight-deployment, binaries from build/bin,
# 2 workers, policy ap (AttentionPredictor as served, with the weights compiled into
# foresight-worker; --weights FILE for others), budget 1024, KV mode cross-token. With --etcd URL no
# node is started: the workers use that cluster (deploy/local-cluster.sh up prints the URL).
# `start` prints the addresses (also in DIR/node.addr, DIR/worker1.addr (gRPC), DIR/worker1.url (the
# HTTP API's base URL, http://HOST:PORT/v1), ...); then:
#   curl -s "$(cat DIR/worker1.url)/chat/completions" -H 'Content-Type: application/json' \
#     -d '{"messages": [{"role": "user", "content": "..."}], "max_tokens": 64}'
#   build/bin/foresight generate --worker "$(cat DIR/worker1.addr)" --prompt "..." --chat
# `stop` stops only the processes this script started (pids in DIR, checked against their command
# line): workers first, then the node (SIGTERM; SIGKILL after 10 s). --purge also removes DIR.
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
cmd="${1:-}"
if [ -n "$cmd" ]; then shift; fi
dir="${FORESIGHT_DEPLOYMENT_DIR:-/tmp/foresight-deployment}"
bin="$repo/build/bin"
workers=2
model=""
policy=ap
budget=1024
weights=""
kv_mode=cross-token
ram=256MiB
nvme=2GiB
etcd=""
threads=""
purge=0
while [ $# -gt 0 ]; do
  case "$1" in
    --dir) dir="$2"; shift 2 ;;
    --bin) bin="$2"; shift 2 ;;
    --workers) workers="$2"; shift 2 ;;
    --model) model="$2"; shift 2 ;;
    --policy) policy="$2"; shift 2 ;;
    --budget) budget="$2"; shift 2 ;;
    --weights) weights="$2"; shift 2 ;;
    --kv-mode) kv_mode="$2"; shift 2 ;;
    --ram) ram="$2"; shift 2 ;;
    --nvme) nvme="$2"; shift 2 ;;
    --etcd) etcd="$2"; shift 2 ;;
    --threads) threads="$2"; shift 2 ;;
    --purge) purge=1; shift ;;
    *) echo "local-deployment.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
done

die() { echo "local-deployment.sh: $*" >&2; exit 1; }

case "$workers" in
  ''|*[!0-9]*|0) die "--workers '$workers': expected a whole number of workers, 1 or more" ;;
esac

# alive, running, stop_pid
. "$repo/deploy/lib/processes.sh"

# Waits for "READY grpc=HOST:PORT ..." in $1 (stdout file) while pid file $2 lives; prints HOST:PORT.
wait_ready() {
  local out="$1" pidfile="$2" what="$3" seconds="$4"
  for _ in $(seq 1 $((seconds * 10))); do
    if grep -q '^READY' "$out" 2>/dev/null; then
      sed -n 's/^READY grpc=\([^ ]*\).*/\1/p' "$out"
      return 0
    fi
    running "$(cat "$pidfile")" || die "$what exited; see ${out%.out}.log"
    sleep 0.1
  done
  die "$what not ready within $seconds s; see ${out%.out}.log"
}

start() {
  [ -x "$bin/foresight-worker" ] || die "$bin/foresight-worker not found (build first: bash deploy/build.sh)"
  mkdir -p "$dir"
  if alive "$dir/worker1.pid" foresight-worker || alive "$dir/node.pid" foresight-cached; then
    die "a deployment is already running in $dir (run: $0 stop --dir $dir)"
  fi
  # A start that fails half way (a worker that does not come up, say) stops what it started.
  trap 'echo "local-deployment.sh: start failed; stopping what it started" >&2; stop >/dev/null' EXIT
  local cache_flags
  if [ -n "$etcd" ]; then
    cache_flags=(--etcd "$etcd")
    echo "cluster  $etcd (no node started here)"
    rm -f "$dir/node.addr"
  else
    rm -f "$dir/node.out"
    setsid "$bin/foresight-cached" --listen 127.0.0.1:0 --ram-bytes "$ram" --nvme-dir "$dir/nvme" \
      --nvme-bytes "$nvme" --metrics 127.0.0.1:0 </dev/null >"$dir/node.out" 2>"$dir/node.log" &
    echo $! >"$dir/node.pid"
    local addr
    addr="$(wait_ready "$dir/node.out" "$dir/node.pid" "cache node" 30)"
    echo "$addr" >"$dir/node.addr"
    echo "node     $(sed -n 's/^READY //p' "$dir/node.out") RAM $ram, NVMe $nvme in $dir/nvme (pid $(cat "$dir/node.pid"), log $dir/node.log)"
    cache_flags=(--cache "$addr")
  fi
  local extra=()
  [ -n "$model" ] && extra+=(--model "$model")
  [ -n "$weights" ] && extra+=(--weights "$weights")
  [ -n "$threads" ] && extra+=(--threads "$threads")
  for i in $(seq 1 "$workers"); do
    rm -f "$dir/worker$i.out"
    setsid "$bin/foresight-worker" --listen 127.0.0.1:0 --http 127.0.0.1:0 "${cache_flags[@]}" --policy "$policy" \
      --budget "$budget" --kv-mode "$kv_mode" "${extra[@]}" </dev/null >"$dir/worker$i.out" 2>"$dir/worker$i.log" &
    echo $! >"$dir/worker$i.pid"
  done
  for i in $(seq 1 "$workers"); do
    local waddr
    waddr="$(wait_ready "$dir/worker$i.out" "$dir/worker$i.pid" "worker $i" 120)"
    echo "$waddr" >"$dir/worker$i.addr"
    echo "http://$(sed -n 's/^READY .* http=\([^ ]*\).*/\1/p' "$dir/worker$i.out")/v1" >"$dir/worker$i.url"
    echo "worker$i  gRPC $waddr, API $(cat "$dir/worker$i.url"), policy $policy budget $budget KV $kv_mode," \
      "weights ${weights:-shipped} (pid $(cat "$dir/worker$i.pid"), log $dir/worker$i.log)"
  done
  echo "$workers" >"$dir/workers"
  trap - EXIT
  echo "started: the OpenAI API at $(cat "$dir/worker1.url"); or $bin/foresight generate --worker" \
    "$(cat "$dir/worker1.addr") --prompt \"...\" --chat"
  echo "stop with: $0 stop --dir $dir"
}

status() {
  [ -d "$dir" ] || die "no deployment state in $dir"
  local rc=0
  if [ -f "$dir/node.pid" ]; then
    if alive "$dir/node.pid" foresight-cached; then
      echo "node     $(cat "$dir/node.addr") up (pid $(cat "$dir/node.pid"))"
      "$bin/foresight" --cache "$(cat "$dir/node.addr")" stat || rc=1
    else
      echo "node     DOWN"; rc=1
    fi
  fi
  for f in "$dir"/worker*.pid; do
    [ -e "$f" ] || continue
    local id
    id="$(basename "$f" .pid)"
    if alive "$f" foresight-worker; then
      echo "$id  $(cat "$dir/$id.addr" 2>/dev/null), $(cat "$dir/$id.url" 2>/dev/null) up (pid $(cat "$f"))"
    else
      echo "$id  DOWN"; rc=1
    fi
  done
  return $rc
}

stop() {
  [ -d "$dir" ] || { echo "nothing to stop in $dir"; return 0; }
  for f in "$dir"/worker*.pid; do
    [ -e "$f" ] || continue
    stop_pid "$f" foresight-worker
  done
  stop_pid "$dir/node.pid" foresight-cached
  echo "stopped the deployment in $dir"
  if [ "$purge" = 1 ]; then rm -rf "$dir"; echo "removed $dir"; fi
}

case "$cmd" in
  start) start ;;
  status) status ;;
  stop) stop ;;
  *) echo "usage: $0 start|status|stop [--dir DIR] [--bin DIR] [--workers N] [--model M] [--policy P] [--budget N]" \
          "[--weights W] [--kv-mode MODE] [--ram SIZE] [--nvme SIZE] [--etcd URL] [--threads N] [--purge]" >&2
     exit 2 ;;
esac
