#!/usr/bin/env bash
# Apiserver CPU per status write of a SecretGuard listing N ServiceAccounts and N Secrets
# (bench/findings.md, finding 2). Needs the local control plane (make cluster).
#   bench/status-write-cost.sh [N=100] [apply|merge]
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
n=${1:-100}
kind=${2:-apply}
export KUBECONFIG=$repo/.cluster/admin.kubeconfig
k=${TOOLS_BIN:-$repo/.tools/bin}/kubectl
ns=status-write-cost
"$k" apply --server-side --force-conflicts -f "$repo/crds/" >/dev/null
"$k" create namespace "$ns" >/dev/null 2>&1 || true
python3 - "$n" <<'PY' | "$k" apply -f - >/dev/null
import json, sys
n = int(sys.argv[1])
names = [{"name": f"obj-{i:04}"} for i in range(n)]
print(json.dumps({"apiVersion": "secretguard.dev/v1alpha1", "kind": "SecretGuard",
                  "metadata": {"name": "g", "namespace": "status-write-cost"},
                  "spec": {"serviceAccounts": names, "secrets": names}}))
PY
port=18999
"$k" proxy --port=$port >/dev/null 2>&1 &
proxy=$!
trap 'kill $proxy; "$k" delete namespace "$ns" --wait=false >/dev/null' EXIT
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
python3 - "$(cat "$repo/.cluster/kube-apiserver.pid")" "$n" "$kind" "$port" <<'PY'
import json, sys, time, urllib.request
pid, n, kind, port = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
def cpu():
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / 100
base = f"http://127.0.0.1:{port}/apis/secretguard.dev/v1alpha1/namespaces/status-write-cost/secretguards/g/status"
url, ctype = (base + "?fieldManager=bench&force=true", "application/apply-patch+yaml") if kind == "apply" \
    else (base + "?fieldManager=bench", "application/merge-patch+json")
writes = 200
c0 = cpu()
for i in range(writes):
    body = {"apiVersion": "secretguard.dev/v1alpha1", "kind": "SecretGuard", "metadata": {"name": "g"},
            "status": {"restores": i, "guarded": 2 * n, "missing": 0}}
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="PATCH", headers={"Content-Type": ctype})
    urllib.request.urlopen(req).read()
print(f"{2 * n} entries, {kind}: apiserver CPU {1000 * (cpu() - c0) / writes:.1f} ms per status write")
PY
