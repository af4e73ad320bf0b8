#!/usr/bin/env bash
# Build one test tool from the Go module proxy into the cache, once per tool and version.
#
#   e2e/tools/build.sh kubernetes v1.37.1   -> kube-apiserver, kube-controller-manager, kubectl
#   e2e/tools/build.sh etcd v3.6.14         -> etcd
#   e2e/tools/build.sh helm v3.21.4         -> helm
#   e2e/tools/build.sh prometheus v0.314.0  -> promtool
#   e2e/tools/build.sh alertmanager v0.31.1 -> alertmanager
#   e2e/tools/build.sh secretguard daddc86  -> secretguard, the operator at that commit of
#                                              this repository (the upgrade test's old version)
#
# Output: $SECRETGUARD_CACHE/tools/<tool>-<version>/bin (default ~/.cache/secretguard).
# A finished build leaves a .complete marker; a cached build is reused without touching Go.
set -euo pipefail

tool=${1:?tool}
version=${2:?version}
here=$(cd "$(dirname "$0")" && pwd)
cache=${SECRETGUARD_CACHE:-$HOME/.cache/secretguard}
out=$cache/tools/$tool-$version
if [[ -f $out/.complete ]]; then
  exit 0
fi

work=$cache/build/$tool-$version
rm -rf "$work" "$out"
mkdir -p "$work" "$out/bin"
export CGO_ENABLED=0 GOFLAGS=-mod=mod
start=$(date +%s)
echo "building $tool $version (first time on this machine; cached afterwards)" >&2

# Copy our wrapper module (go.mod, go.sum) for this tool into the work dir.
wrapper() {
  cp "$here/$1/go.mod" "$work/go.mod"
  [[ -f $here/$1/go.sum ]] && cp "$here/$1/go.sum" "$work/go.sum"
  return 0
}

case $tool in
kubernetes)
  # k8s.io/kubernetes maps its staging modules with replace lines that only a main module
  # may carry; derive them from its own go.mod so any version builds.
  gomod=$(cd "$work" && go mod download -json "k8s.io/kubernetes@$version" | sed -n 's/^\t"GoMod": "\(.*\)",$/\1/p')
  staging=${version/#v1./v0.}
  {
    echo "module secretguard.dev/e2e/tools/kubernetes"
    echo
    echo "go 1.26"
    echo
    echo "require k8s.io/kubernetes $version"
    echo
    echo "replace ("
    sed -n 's#^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => ./staging/.*#\t\1 => \1 '"$staging"'#p' "$gomod"
    echo ")"
  } >"$work/go.mod"
  grep -q '=>' "$work/go.mod" || { echo "no staging replace lines found in $gomod" >&2; exit 1; }
  minor=${version#v1.}; minor=${minor%%.*}
  ld=""
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $pkg.gitVersion=$version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
  done
  (cd "$work" && go build -trimpath -ldflags "-s -w$ld" -o "$out/bin/" \
    k8s.io/kubernetes/cmd/kube-apiserver \
    k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kubectl)
  ;;
etcd)
  wrapper etcd
  sed -i "s|^require go.etcd.io/etcd/server/v3 .*|require go.etcd.io/etcd/server/v3 $version|" "$work/go.mod"
  ld="-X go.etcd.io/etcd/api/v3/version.GitSHA=$version"
  (cd "$work" && go build -trimpath -ldflags "-s -w $ld" -o "$out/bin/etcd" go.etcd.io/etcd/server/v3)
  ;;
helm)
  (cd "$work" && GOBIN="$out/bin" go install -trimpath \
    -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$version" "helm.sh/helm/v3/cmd/helm@$version")
  ;;
prometheus)
  wrapper prometheus
  sed -i "s|^require github.com/prometheus/prometheus .*|require github.com/prometheus/prometheus $version|" "$work/go.mod"
  # Module v0.314.0 is Prometheus 3.14.0: report the release version, as upstream builds do.
  num=${version#v0.}; num=${num%%.*}
  release=$((num / 100)).$((num % 100)).${version##*.}
  ld="-X github.com/prometheus/common/version.Version=$release -X github.com/prometheus/common/version.Branch=HEAD"
  (cd "$work" && go build -trimpath -ldflags "-s -w $ld" -o "$out/bin/promtool" github.com/prometheus/prometheus/cmd/promtool)
  ;;
alertmanager)
  ld="-X github.com/prometheus/common/version.Version=${version#v} -X github.com/prometheus/common/version.Branch=HEAD"
  (cd "$work" && GOBIN="$out/bin" go install -trimpath -ldflags "-s -w $ld" \
    "github.com/prometheus/alertmanager/cmd/alertmanager@$version")
  ;;
secretguard)
  # An earlier commit of this repository, from its own Git history: a debug build (cheaper
  # than release on a small machine), with a target dir of its own under the cache, kept
  # for the next commit so only what changed is compiled again.
  repo=$(cd "$here/../.." && pwd)
  git -C "$repo" cat-file -e "$version^{commit}" 2>/dev/null ||
    { echo "commit $version is not in $repo (a shallow clone? git fetch --unshallow)" >&2; exit 1; }
  mkdir -p "$work/src"
  git -C "$repo" archive "$version" | tar -x -C "$work/src"
  target=$cache/build/secretguard-target
  (cd "$work/src" && CARGO_TARGET_DIR=$target CARGO_INCREMENTAL=0 \
    cargo build --locked --quiet --bin secretguard)
  cp "$target/debug/secretguard" "$out/bin/secretguard"
  ;;
*)
  echo "unknown tool $tool" >&2
  exit 2
  ;;
esac

echo "$tool $version built in $(( $(date +%s) - start ))s" >&2
touch "$out/.complete"
rm -rf "$work"
