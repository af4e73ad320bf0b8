#!/usr/bin/env bash
# The problem secretguard solves, on the real local control plane: a legacy
# ServiceAccount token works, its Secret is deleted, every holder is locked out, and
# re-creating the Secret with the same bytes lets them back in. Prints a timeline.
# Token bytes are never printed. Exit non-zero if any step does not behave as stated.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
bin=${TOOLS_BIN:-$repo/.tools/bin}
kubeconfig=$("$repo/e2e/cluster.sh" up 2>/dev/null | sed -n 's/^KUBECONFIG=//p')
k() { "$bin/kubectl" --kubeconfig "$kubeconfig" "$@"; }
server=$(k config view --raw -o jsonpath='{.clusters[0].cluster.server}')
ca=$(mktemp)
trap 'rm -f "$ca"; k delete namespace "$ns" --wait=false --ignore-not-found >/dev/null 2>&1 || true' EXIT
k config view --raw -o jsonpath='{.clusters[0].cluster.certificate-authority-data}' | base64 -d >"$ca"

t0=$(date +%s%3N)
say() { printf '%8s ms  %s\n' "$(($(date +%s%3N) - t0))" "$*"; }
die() { say "FAILED: $*"; exit 1; }

# Who does the apiserver say the bearer of this token is? (HTTP status, or the username.)
whoami_with() {
  curl -sS --http1.1 --cacert "$ca" -H "Authorization: Bearer $1" -H 'Content-Type: application/json' \
    -X POST "$server/apis/authentication.k8s.io/v1/selfsubjectreviews" \
    -d '{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}' -w '\n%{http_code}' |
    python3 -c 'import json,sys; body,code=sys.stdin.read().rsplit("\n",1); print(json.loads(body)["status"]["userInfo"]["username"] if code=="201" else "HTTP "+code)'
}

ns=demo-$(date +%s)
say "cluster: $(k version -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["serverVersion"]["gitVersion"])') at $server"
k create namespace "$ns" >/dev/null
k -n "$ns" create serviceaccount ingest-writer >/dev/null
k -n "$ns" apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Secret
type: kubernetes.io/service-account-token
metadata:
  name: ingest-writer-token
  annotations: {kubernetes.io/service-account.name: ingest-writer}
YAML
say "created ServiceAccount $ns/ingest-writer and its token Secret ingest-writer-token"
token=""
for _ in $(seq 1 300); do
  token=$(k -n "$ns" get secret ingest-writer-token -o jsonpath='{.data.token}' | base64 -d)
  [[ -n $token ]] && break
  sleep 0.1
done
[[ -n $token ]] || die "the tokens controller did not populate the token"
say "tokens controller populated the token (bytes not shown)"
backup=$(k -n "$ns" get secret ingest-writer-token -o json)
who=$(whoami_with "$token")
[[ $who == "system:serviceaccount:$ns:ingest-writer" ]] || die "token does not authenticate: $who"
say "a consumer holding the token is $who"

k -n "$ns" delete secret ingest-writer-token >/dev/null
say "a deploy deletes Secret ingest-writer-token"
# kube-apiserver caches successful token authentications for a few seconds, so the
# lock-out starts once that cache expires: wait for it, up to a deadline.
for _ in $(seq 1 300); do
  who=$(whoami_with "$token")
  [[ $who == "HTTP 401" ]] && break
  sleep 0.1
done
[[ $who == "HTTP 401" ]] || die "token still works 30s after deletion: $who"
say "the same consumer now gets $who: every service using the token is locked out"

echo "$backup" | python3 -c '
import json, sys
s = json.load(sys.stdin)
m = s["metadata"]
s["metadata"] = {"name": m["name"], "annotations": {"kubernetes.io/service-account.name": m["annotations"]["kubernetes.io/service-account.name"]}}
print(json.dumps(s))' | k -n "$ns" create -f - >/dev/null
say "re-created the Secret with the same token bytes (what secretguard automates)"
who=$(whoami_with "$token")
[[ $who == "system:serviceaccount:$ns:ingest-writer" ]] || die "identical restore did not revive the token: $who"
say "the consumer's old token works again: $who"
say "done"
