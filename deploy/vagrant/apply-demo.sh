#!/usr/bin/env bash
# Applies the manifests given (the DNS add-on, the demo) once NODES Nodes are Ready, so their
# Pods spread over the VMs instead of all landing on the first one up. Bounded: gives up after
# 25 minutes.
set -euo pipefail
nodes=$1
shift
files=()
for manifest in "$@"; do
    files+=(-f "$manifest")
done
export KUBECONFIG=/var/lib/skiff/control/admin.kubeconfig
for _ in $(seq 1 750); do
    ready=$(kubectl get nodes -o jsonpath='{range .items[*]}{range .status.conditions[?(@.type=="Ready")]}{.status}{"\n"}{end}{end}' 2>/dev/null | grep -c True || true)
    if [ "$ready" -ge "$nodes" ]; then
        exec kubectl apply "${files[@]}"
    fi
    sleep 2
done
echo "only $ready of $nodes Nodes became Ready: demo not applied" >&2
exit 1
