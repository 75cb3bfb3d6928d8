# Process helpers shared by deploy/local-deployment.sh and deploy/local-cluster.sh (sourced).

# True when pid file $1 names a live process whose command line contains $2.
alive() {
  local pid
  [ -f "$1" ] || return 1
  pid="$(cat "$1")"
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$2"
}

# True while pid $1 runs (a zombie, exited but not yet reaped, counts as stopped).
running() {
  [ -r "/proc/$1/stat" ] && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != "Z" ]
}

# Stops the process of pid file $1 (if its command line contains $2): SIGTERM, up to 10 s, then
# SIGKILL, saying so. Removes the pid file.
stop_pid() {
  local pid
  alive "$1" "$2" || { rm -f "$1"; return 0; }
  pid="$(cat "$1")"
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do
    running "$pid" || break
    sleep 0.1
  done
  if running "$pid"; then
    echo "  $2 (pid $pid) did not stop within 10 s; killing it" >&2
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$1"
}
