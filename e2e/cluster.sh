#!/usr/bin/env bash
# A real local Kubernetes control plane on loopback: etcd, kube-apiserver and
# kube-controller-manager, built from the Go module proxy (see e2e/tools/build.sh).
#
#   e2e/cluster.sh up       start, or reuse a healthy one; last line: KUBECONFIG=<path>
#   e2e/cluster.sh down     stop it and remove its state
#   e2e/cluster.sh status   exit 0 when healthy
#   e2e/cluster.sh restart-kcm      restart kube-controller-manager (same flags)
#   e2e/cluster.sh restart-apiserver
#   e2e/cluster.sh restart-etcd     same data and ports (the apiserver stays up meanwhile)
#   e2e/cluster.sh stop-apiserver | start-apiserver   an outage of the apiserver alone
#
# Environment:
#   SECRETGUARD_CLUSTER_DIR   state directory (default <repo>/.cluster)
#   TOOLS_BIN                 where the binaries are (default <repo>/.tools/bin)
#   LEGACY_TOKEN_CLEANUP_PERIOD  KCM --legacy-service-account-token-clean-up-period (default 8760h)
#   KUBE_APISERVER_EXTRA_ARGS, KUBE_CONTROLLER_MANAGER_EXTRA_ARGS  more flags (word-split)
#   KCM_TOKENS_CONTROLLER=off KCM without a signing key: token Secrets stay empty
#   KCM_CONTROLLERS           KCM --controllers (default: the tokens controller, the legacy
#                             token cleaner, namespace, garbage collector, SA, root CA publisher)
#
# Ports are chosen free at start, never fixed. Certificates are generated per cluster.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
dir=${SECRETGUARD_CLUSTER_DIR:-$repo/.cluster}
bin=${TOOLS_BIN:-$repo/.tools/bin}
# A restart of KCM keeps the cluster's period unless a new one is given.
cleanup_period=${LEGACY_TOKEN_CLEANUP_PERIOD:-$(cat "$dir/cleanup-period" 2>/dev/null || echo 8760h)}
components=(etcd kube-apiserver kube-controller-manager)
default_controllers=serviceaccount-token-controller,serviceaccount-controller,legacy-serviceaccount-token-cleaner-controller,garbage-collector-controller,namespace-controller,root-ca-certificate-publisher-controller

log() { echo "cluster: $*" >&2; }

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

pid_alive() {
  local f=$dir/$1.pid
  [[ -f $f ]] && kill -0 "$(cat "$f")" 2>/dev/null
}

kubectl_admin() {
  "$bin/kubectl" --kubeconfig "$dir/admin.kubeconfig" --request-timeout=5s "$@"
}

healthy() {
  [[ -f $dir/admin.kubeconfig ]] || return 1
  local c
  for c in "${components[@]}"; do
    pid_alive "$c" || return 1
  done
  kubectl_admin get --raw /readyz >/dev/null 2>&1
}

# Print which component failed and the end of its log, then exit non-zero.
fail() {
  local component=$1 why=$2
  log "FAILED: $component: $why"
  if [[ -f $dir/logs/$component.log ]]; then
    log "last lines of $dir/logs/$component.log:"
    tail -n 30 "$dir/logs/$component.log" >&2
  fi
  exit 1
}

stop() {
  local c f pid
  for c in kube-controller-manager kube-apiserver etcd; do
    stop_one "$c"
  done
}

stop_one() {
  local c=$1 f=$dir/$1.pid pid i
  [[ -f $f ]] || return 0
  pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for i in $(seq 1 100); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$f"
}

# Start a component detached from this shell, so it outlives `make cluster`.
launch() {
  local name=$1
  shift
  setsid "$@" >>"$dir/logs/$name.log" 2>&1 </dev/null 9>&- &
  echo $! >"$dir/$name.pid"
}

# Wait for a condition, up to a deadline, failing early when the process died.
wait_for() {
  local name=$1 seconds=$2
  shift 2
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    pid_alive "$name" || fail "$name" "process exited during start-up"
    ((SECONDS < deadline)) || fail "$name" "not ready within ${seconds}s"
    sleep 0.2
  done
}

gen_certs() {
  local pki=$dir/pki
  mkdir -p "$pki"
  (
    cd "$pki"
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=secretguard-local-ca" \
      -keyout ca.key -out ca.crt 2>/dev/null
    cat >server.ext <<EOF
subjectAltName=IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local
extendedKeyUsage=serverAuth
EOF
    sign server "/CN=kube-apiserver" server.ext
    printf 'extendedKeyUsage=clientAuth\n' >client.ext
    sign admin "/O=system:masters/CN=secretguard-admin" client.ext
    sign kcm "/CN=system:kube-controller-manager" client.ext
    # One key pair for service accounts: the apiserver verifies and signs with it, KCM signs
    # legacy tokens with it.
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
    rm -f ./*.csr ./*.ext ca.srl
  )
}

sign() {
  local name=$1 subject=$2 ext=$3
  openssl req -newkey rsa:2048 -nodes -subj "$subject" -keyout "$name.key" -out "$name.csr" 2>/dev/null
  openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
    -extfile "$ext" -out "$name.crt" 2>/dev/null
}

kubeconfig() {
  local user=$1 out=$2
  cat >"$out" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: https://127.0.0.1:$(cat "$dir/apiserver.port")
    certificate-authority-data: $(base64 -w0 "$dir/pki/ca.crt")
users:
- name: $user
  user:
    client-certificate-data: $(base64 -w0 "$dir/pki/$user.crt")
    client-key-data: $(base64 -w0 "$dir/pki/$user.key")
contexts:
- name: local
  context: {cluster: local, user: $user}
current-context: local
EOF
}

start_etcd() {
  local client peer
  # A restart keeps both ports: the apiserver and the member's own record point at them.
  if [[ ! -f $dir/etcd.port ]]; then
    free_port >"$dir/etcd.port"
    free_port >"$dir/etcd-peer.port"
  fi
  client=$(cat "$dir/etcd.port")
  peer=$(cat "$dir/etcd-peer.port")
  launch etcd "$bin/etcd" --name local --data-dir "$dir/etcd" \
    --listen-client-urls "http://127.0.0.1:$client" --advertise-client-urls "http://127.0.0.1:$client" \
    --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
    --initial-cluster "local=http://127.0.0.1:$peer" --unsafe-no-fsync=true \
    --quota-backend-bytes=8589934592 --log-level=warn
  wait_for etcd 30 curl -fsS "http://127.0.0.1:$client/health"
}

start_apiserver() {
  local port
  if [[ ! -f $dir/apiserver.port ]]; then
    free_port >"$dir/apiserver.port"
  fi
  port=$(cat "$dir/apiserver.port")
  launch kube-apiserver "$bin/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$(cat "$dir/etcd.port")" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$port" \
    --tls-cert-file "$dir/pki/server.crt" --tls-private-key-file "$dir/pki/server.key" \
    --client-ca-file "$dir/pki/ca.crt" \
    --authorization-mode RBAC \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$dir/pki/sa.pub" \
    --service-account-signing-key-file "$dir/pki/sa.key" \
    --service-account-lookup=true \
    --service-cluster-ip-range 10.0.0.0/24 \
    --endpoint-reconciler-type none \
    --allow-privileged=true \
    --profiling=false ${KUBE_APISERVER_EXTRA_ARGS:-}
  kubeconfig admin "$dir/admin.kubeconfig"
  wait_for kube-apiserver 90 kubectl_admin get --raw /readyz
}

start_kcm() {
  kubeconfig kcm "$dir/kcm.kubeconfig"
  # KCM runs its tokens controller whenever it has a signing key, whatever --controllers
  # says (seen on v1.37); without the key, legacy tokens are never filled.
  local signing_key=$dir/pki/sa.key
  [[ ${KCM_TOKENS_CONTROLLER:-on} == off ]] && signing_key=""
  launch kube-controller-manager "$bin/kube-controller-manager" \
    --kubeconfig "$dir/kcm.kubeconfig" \
    --leader-elect=false --secure-port=0 \
    --use-service-account-credentials=true \
    ${signing_key:+--service-account-private-key-file "$signing_key"} \
    --root-ca-file "$dir/pki/ca.crt" \
    --controllers "${KCM_CONTROLLERS:-$default_controllers}" \
    --legacy-service-account-token-clean-up-period "$cleanup_period" \
    --concurrent-gc-syncs=5 --concurrent-namespace-syncs=5 \
    --kube-api-qps=200 --kube-api-burst=400 ${KUBE_CONTROLLER_MANAGER_EXTRA_ARGS:-}
  # Ready when the serviceaccount controller has made the default ServiceAccount.
  wait_for kube-controller-manager 60 kubectl_admin -n default get serviceaccount default
}

up() {
  if healthy; then
    log "reusing healthy control plane in $dir"
  else
    if [[ -d $dir ]]; then
      log "found a control plane in $dir that is not healthy: replacing it"
      stop
      rm -rf "$dir"
    fi
    local c
    for c in etcd kube-apiserver kube-controller-manager kubectl; do
      [[ -x $bin/$c ]] || fail "$c" "binary $bin/$c missing: run 'make tools'"
    done
    mkdir -p "$dir/logs"
    echo "$cleanup_period" >"$dir/cleanup-period"
    gen_certs
    start_etcd
    start_apiserver
    start_kcm
    log "started: $("$bin/kubectl" --kubeconfig "$dir/admin.kubeconfig" version -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["serverVersion"]["gitVersion"])')"
  fi
  for c in "${components[@]}"; do
    log "$c (pid $(cat "$dir/$c.pid")) logs to $dir/logs/$c.log"
  done
  echo "KUBECONFIG=$dir/admin.kubeconfig"
}

# One invocation at a time per state directory (parallel test binaries, make targets).
mkdir -p "$(dirname "$dir")"
exec 9>"$dir.lock"
flock 9

case ${1:-up} in
up) up ;;
down)
  stop
  rm -rf "$dir"
  log "stopped and removed $dir"
  ;;
status)
  if healthy; then
    echo "healthy: KUBECONFIG=$dir/admin.kubeconfig"
  else
    echo "not running or unhealthy"
    exit 1
  fi
  ;;
restart-kcm)
  stop_one kube-controller-manager
  echo "$cleanup_period" >"$dir/cleanup-period"
  start_kcm
  ;;
restart-apiserver)
  stop_one kube-apiserver
  start_apiserver
  ;;
restart-etcd)
  stop_one etcd
  start_etcd
  ;;
stop-apiserver) stop_one kube-apiserver ;;
start-apiserver) start_apiserver ;;
*)
  echo "usage: $0 up|down|status|restart-kcm|restart-apiserver|restart-etcd|stop-apiserver|start-apiserver" >&2
  exit 2
  ;;
esac
