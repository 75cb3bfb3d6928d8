#!/usr/bin/env bash
# A local Foresight cluster on one machine: one etcd and N cache nodes on loopback, ports chosen
# free at run time, all state (pids, logs, etcd data, NVMe tiers) in one directory.
#
#   deploy/local-cluster.sh up     [-n N] [--dir DIR] [--bin DIR] [--ram SIZE] [--nvme SIZE] [--ttl S]
#   deploy/local-cluster.sh status [--dir DIR]
#   deploy/local-cluster.sh down   [--dir DIR] [--purge]
#
# Defaults: N=3, DIR=$FORESIGHT_CLUSTER_DIR or /tmp/foresight-cluster, binaries from build/bin.
# `up` prints the etcd URL (also in DIR/etcd.url); clients use it:
#   build/bin/foresight --etcd "$(cat DIR/etcd.url)" cluster status
# `down` stops only the processes this script started (pids in DIR, checked against their
# command line), nodes first (they deregister), then etcd; --purge also removes DIR.
# Needs: etcd-server (etcd), python3 (to pick free ports).
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
cmd="${1:-}"
if [ -n "$cmd" ]; then shift; fi
n=3
dir="${FORESIGHT_CLUSTER_DIR:-/tmp/foresight-cluster}"
bin="$repo/build/bin"
ram=256MiB
nvme=1GiB
ttl=10
purge=0
while [ $# -gt 0 ]; do
  case "$1" in
    -n) n="$2"; shift 2 ;;
    --dir) dir="$2"; shift 2 ;;
    --bin) bin="$2"; shift 2 ;;
    --ram) ram="$2"; shift 2 ;;
    --nvme) nvme="$2"; shift 2 ;;
    --ttl) ttl="$2"; shift 2 ;;
    --purge) purge=1; shift ;;
    *) echo "local-cluster.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
done
etcd_bin="${FORESIGHT_ETCD:-$(command -v etcd || true)}"

die() { echo "local-cluster.sh: $*" >&2; exit 1; }

case "$n" in
  ''|*[!0-9]*|0) die "-n '$n': expected a whole number of nodes, 1 or more" ;;
esac

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# alive, running, stop_pid
. "$repo/deploy/lib/processes.sh"

up() {
  [ -x "$bin/foresight-cached" ] || die "$bin/foresight-cached not found (build first, or pass --bin DIR)"
  if [ -z "$etcd_bin" ] || [ ! -x "$etcd_bin" ]; then die "etcd not found (apt-get install etcd-server)"; fi
  command -v python3 >/dev/null || die "python3 not found (needed to pick free ports)"
  mkdir -p "$dir"
  alive "$dir/etcd.pid" etcd && die "a cluster is already up in $dir (run: $0 down --dir $dir)"
  # An `up` that fails half way (a node that does not come up, say) stops what it started.
  trap 'echo "local-cluster.sh: up failed; stopping what it started" >&2; down >/dev/null' EXIT

  local cport pport url
  cport="$(free_port)"
  pport="$(free_port)"
  url="http://127.0.0.1:$cport"
  setsid "$etcd_bin" --name local --data-dir "$dir/etcd-data" \
    --listen-client-urls "$url" --advertise-client-urls "$url" \
    --listen-peer-urls "http://127.0.0.1:$pport" --initial-advertise-peer-urls "http://127.0.0.1:$pport" \
    --initial-cluster "local=http://127.0.0.1:$pport" --log-level error \
    </dev/null >"$dir/etcd.log" 2>&1 &
  echo $! >"$dir/etcd.pid"
  echo "$url" >"$dir/etcd.url"
  local ok=0
  for _ in $(seq 1 100); do
    if python3 - "$url" <<'EOF' 2>/dev/null; then ok=1; break; fi
import sys, urllib.request
urllib.request.urlopen(urllib.request.Request(sys.argv[1] + "/v3/kv/range", data=b'{"key":"Lw=="}'), timeout=1)
EOF
    kill -0 "$(cat "$dir/etcd.pid")" 2>/dev/null || die "etcd exited; see $dir/etcd.log"
    sleep 0.1
  done
  [ "$ok" = 1 ] || die "etcd did not answer on $url within 10 s; see $dir/etcd.log"
  echo "etcd     $url (pid $(cat "$dir/etcd.pid"))"

  for i in $(seq 0 $((n - 1))); do
    local id="n$i"
    mkdir -p "$dir/$id"
    rm -f "$dir/$id.out"
    setsid "$bin/foresight-cached" --listen 127.0.0.1:0 --ram-bytes "$ram" --nvme-dir "$dir/$id/nvme" \
      --nvme-bytes "$nvme" --metrics 127.0.0.1:0 --etcd "$url" --node-id "$id" --etcd-ttl "$ttl" \
      </dev/null >"$dir/$id.out" 2>"$dir/$id.log" &
    echo $! >"$dir/$id.pid"
    for _ in $(seq 1 300); do
      grep -q '^READY' "$dir/$id.out" 2>/dev/null && break
      kill -0 "$(cat "$dir/$id.pid")" 2>/dev/null || die "node $id exited; see $dir/$id.log"
      sleep 0.1
    done
    grep -q '^READY' "$dir/$id.out" || die "node $id not ready within 30 s; see $dir/$id.log"
    echo "node $id  $(sed -n 's/^READY //p' "$dir/$id.out") (pid $(cat "$dir/$id.pid"), log $dir/$id.log)"
  done
  echo "$n" >"$dir/nodes"
  trap - EXIT
  echo "up: $bin/foresight --etcd $url cluster status"
}

status() {
  [ -f "$dir/etcd.url" ] || die "no cluster state in $dir"
  local rc=0
  if alive "$dir/etcd.pid" etcd; then echo "etcd     $(cat "$dir/etcd.url") up"; else echo "etcd     DOWN"; rc=1; fi
  for f in "$dir"/n*.pid; do
    [ -e "$f" ] || continue
    local id
    id="$(basename "$f" .pid)"
    if alive "$f" foresight-cached; then echo "node $id  up (pid $(cat "$f"))"; else echo "node $id  DOWN"; rc=1; fi
  done
  if [ -x "$bin/foresight" ] && alive "$dir/etcd.pid" etcd; then
    "$bin/foresight" --etcd "$(cat "$dir/etcd.url")" cluster status || rc=1
  fi
  return $rc
}

down() {
  [ -d "$dir" ] || { echo "nothing to stop in $dir"; return 0; }
  for f in "$dir"/n*.pid; do
    [ -e "$f" ] || continue
    stop_pid "$f" foresight-cached
  done
  stop_pid "$dir/etcd.pid" etcd
  echo "down: stopped the cluster in $dir"
  if [ "$purge" = 1 ]; then rm -rf "$dir"; echo "removed $dir"; fi
}

case "$cmd" in
  up) up ;;
  status) status ;;
  down) down ;;
  *) echo "usage: $0 up|status|down [-n N] [--dir DIR] [--bin DIR] [--ram SIZE] [--nvme SIZE] [--ttl S] [--purge]" >&2
     exit 2 ;;
esac
