#!/usr/bin/env bash
# Validates the manifests offline: yamllint (syntax, style) and kubernetes-validate (the
# Kubernetes OpenAPI schemas it bundles, strict: unknown fields are errors). Both from PyPI, in a
# virtualenv (python3-venv); nothing contacts a cluster.
#   K8S_VERSION   schema version (default 1.29.0)
#   VENV          virtualenv to use or create (default ~/.cache/foresight/k8s-validate)
set -euo pipefail
cd "$(dirname "$0")"
venv="${VENV:-$HOME/.cache/foresight/k8s-validate}"
if [ ! -x "$venv/bin/kubernetes-validate" ] || [ ! -x "$venv/bin/yamllint" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "kubernetes-validate>=1.29" yamllint
fi
"$venv/bin/yamllint" -d '{extends: default, rules: {line-length: {max: 200}, document-start: disable}}' ./*.yaml
manifests=(namespace.yaml etcd.yaml local-nvme-storage.yaml cache-nodes.yaml workers.yaml)
"$venv/bin/kubernetes-validate" --strict -k "${K8S_VERSION:-1.29.0}" "${manifests[@]}"
echo "k8s manifests valid (yamllint + kubernetes-validate --strict, Kubernetes ${K8S_VERSION:-1.29.0})"
