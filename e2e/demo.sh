#!/usr/bin/env bash
# The outage secretguard exists for (docs/architecture.md, Why), replayed on the real local control
# plane with the real operator and a real Alertmanager:
#   1. a deploy deletes the token Secret that services authenticate with;
#   2. later, a deploy deletes and re-creates the ServiceAccount itself.
# Prints a timeline and the `kubectl get sguard` view. Token bytes are never printed.
# Exits non-zero if any step does not happen as stated.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
bin=${TOOLS_BIN:-$repo/.tools/bin}
operator=${SECRETGUARD_BIN:-$repo/target/debug/secretguard}
[[ -x $operator ]] || { echo "demo: build the operator first (cargo build)" >&2; exit 1; }
kubeconfig=$("$repo/e2e/cluster.sh" up 2>/dev/null | sed -n 's/^KUBECONFIG=//p')
export KUBECONFIG=$kubeconfig
k() { "$bin/kubectl" "$@"; }
work=$(mktemp -d)
ns=ingest-$(date +%s)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  k delete namespace "$ns" --wait=false --ignore-not-found >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

t0=$(date +%s%3N)
say() { printf '%8s ms  %s\n' "$(($(date +%s%3N) - t0))" "$*"; }
die() {
  say "FAILED: $*"
  echo "--- operator log (last lines) ---" >&2
  tail -n 20 "$work/operator.log" >&2 || true
  exit 1
}
# Poll a condition (a shell command) every 50 ms, up to 30 s.
until_ok() {
  local what=$1
  shift
  for _ in $(seq 1 600); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  die "timed out waiting: $what"
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

server=$(k config view --raw -o jsonpath='{.clusters[0].cluster.server}')
k config view --raw -o jsonpath='{.clusters[0].cluster.certificate-authority-data}' | base64 -d >"$work/ca.crt"
whoami_with() {
  curl -sS --http1.1 --cacert "$work/ca.crt" -H "Authorization: Bearer $1" -H 'Content-Type: application/json' \
    -X POST "$server/apis/authentication.k8s.io/v1/selfsubjectreviews" \
    -d '{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}' -w '\n%{http_code}' |
    python3 -c 'import json,sys; body,code=sys.stdin.read().rsplit("\n",1); print(json.loads(body)["status"]["userInfo"]["username"] if code=="201" else "HTTP "+code)'
}
token_of() { k -n "$ns" get secret ingest-writer-token -o jsonpath='{.data.token}' 2>/dev/null | base64 -d; }
has_token() { [[ -n $(token_of) ]]; }

say "control plane $(k version -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["serverVersion"]["gitVersion"])') at $server"
k apply --server-side --force-conflicts -f "$repo/crds" >/dev/null
k wait --for=condition=Established crd/secretguards.secretguard.dev >/dev/null
k create namespace secretguard-system >/dev/null 2>&1 || true

am_port=$(free_port)
printf 'route: {receiver: pager}\nreceivers: [{name: pager}]\n' >"$work/am.yml"
"$bin/alertmanager" --config.file="$work/am.yml" --storage.path="$work/am" \
  --web.listen-address="127.0.0.1:$am_port" --cluster.listen-address= >"$work/am.log" 2>&1 &
pids+=($!)
until_ok "Alertmanager ready" curl -fsS "http://127.0.0.1:$am_port/-/ready"
health=$(free_port)
"$operator" run --namespace secretguard-system --leader-elect=false \
  --metrics-bind-address="127.0.0.1:$(free_port)" --health-bind-address="127.0.0.1:$health" \
  --alertmanager-url="http://127.0.0.1:$am_port" >"$work/operator.log" 2>&1 &
pids+=($!)
until_ok "operator ready" curl -fsS "http://127.0.0.1:$health/readyz"
say "secretguard running, pushing alerts to Alertmanager on 127.0.0.1:$am_port"

k create namespace "$ns" >/dev/null
k -n "$ns" create serviceaccount ingest-writer >/dev/null
k apply -f - >/dev/null <<YAML
apiVersion: secretguard.dev/v1alpha1
kind: SecretGuard
metadata: {name: ingest-auth, namespace: $ns}
spec:
  serviceAccounts: [{name: ingest-writer}]
YAML
until_ok "token created and filled" has_token
token=$(token_of)
say "guard ingest-auth created; secretguard created token Secret ingest-writer-token, the tokens controller filled it"
until_ok "restore point saved" bash -c "[[ \$('$bin/kubectl' -n secretguard-system get secrets -l secretguard.dev/origin-namespace=$ns -o name | wc -l) -ge 1 ]]"

echo
echo "== incident 1: a deploy deletes the token Secret =="
k -n "$ns" delete secret ingest-writer-token >/dev/null
say "deploy deleted Secret ingest-writer-token"
restored() { k -n "$ns" get sguard ingest-auth -o jsonpath='{.status.restores}' | grep -qx 1; }
until_ok "restore recorded" restored
ms=$(k -n "$ns" get sguard ingest-auth -o jsonpath='{.status.lastIncident.restoreSeconds}' | python3 -c 'import sys; print(round(float(sys.stdin.read())*1000))')
say "detected and restored by secretguard in $ms ms (lastIncident: $(k -n "$ns" get sguard ingest-auth -o jsonpath='{.status.lastIncident.reason}/{.status.lastIncident.outcome}'))"
[[ $(token_of) == "$token" ]] || die "restored token has different bytes"
verified() { k -n "$ns" get events -o json | grep -q 'TokenReview: authenticates as'; }
until_ok "TokenRestored event" verified
say "restored with identical bytes; TokenReview verified it (Event TokenRestored)"
who=$(whoami_with "$token")
[[ $who == "system:serviceaccount:$ns:ingest-writer" ]] || die "the consumer's token does not work: $who"
say "a consumer using the original token is still $who"
alert_up() { curl -fsS "http://127.0.0.1:$am_port/api/v2/alerts?filter=namespace%3D%22$ns%22" | grep -q "\"alertname\":\"$1\""; }
until_ok "alert in Alertmanager" alert_up SecretGuardTokenDeleted
say "alert SecretGuardTokenDeleted raised in Alertmanager (someone deletes critical tokens: find out who)"

echo
echo "== incident 2: a deploy deletes and re-creates the ServiceAccount =="
k -n "$ns" delete serviceaccount ingest-writer >/dev/null
k -n "$ns" create serviceaccount ingest-writer >/dev/null
say "deploy deleted and re-created ServiceAccount ingest-writer (new UID: every old token is dead)"
new_token() { has_token && [[ $(token_of) != "$token" ]]; }
until_ok "fresh token" new_token
fresh=$(token_of)
who=$(whoami_with "$fresh")
[[ $who == "system:serviceaccount:$ns:ingest-writer" ]] || die "fresh token does not work: $who"
say "secretguard issued a fresh token at once; it authenticates as $who"
old_dead() { [[ $(whoami_with "$token") == "HTTP 401" ]]; }
until_ok "the old token to be rejected (kube-apiserver caches successful authentications for ~10 s)" old_dead
say "the old token is rejected (HTTP 401) once the apiserver's ~10 s auth cache expires: consumers must update"
until_ok "rotation alert" alert_up SecretGuardTokenRotated
say "alert SecretGuardTokenRotated raised in Alertmanager (consumers must switch to the new token)"

echo
k -n "$ns" get sguard
