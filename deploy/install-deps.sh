#!/usr/bin/env bash
# Installs the Debian 12 packages Foresight builds and tests with (run as root, or with sudo).
# Arguments, if any, are more packages to install in the same apt-get run (CI's own: .ci/run).
set -euo pipefail
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
packages=(
  build-essential cmake pkg-config git python3 python3-pip openssl libssl-dev
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  librocksdb-dev libucx-dev ucx-utils
  libspdlog-dev libfmt-dev libcli11-dev nlohmann-json3-dev prometheus-cpp-dev libxxhash-dev
  libcpp-httplib-dev
  libopenblas-dev libgtest-dev libgmock-dev libbenchmark-dev
  etcd-server etcd-client
  # predictor/training/train.py (and its test against the published vectors): CPU PyTorch
  python3-torch python3-numpy libopenblas0-pthread
  # the tests' virtual environment (tools/python-env.sh: OpenAI's client for the HTTP API's test)
  python3-venv
  # promtool, which lints the node's and the worker's /metrics (MetricsEndpointsTest); Debian ships
  # it only inside the Prometheus server's package
  prometheus
  "$@"
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update
  $SUDO apt-get install -y --no-install-recommends "${missing[@]}"
fi
