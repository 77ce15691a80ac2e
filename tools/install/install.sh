#!/usr/bin/env bash
# install.sh installs every component Hermes' tests and demo run, from Debian
# packages and from source through the Go module proxy (nothing else is
# reachable, and no prebuilt binary is ever downloaded).
#
# Idempotent: each component is rebuilt only when its pinned version
# (versions.env) or build recipe changes; a warm run takes seconds.
#
#   HERMES_CACHE   where built binaries live (default ~/.cache/hermes);
#                  binaries go to $HERMES_CACHE/bin, stamps to $HERMES_CACHE/stamps
#   usage: install.sh [component...]   (default: all)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"

HERMES_CACHE=${HERMES_CACHE:-$HOME/.cache/hermes}
BIN=$HERMES_CACHE/bin
STAMPS=$HERMES_CACHE/stamps
mkdir -p "$BIN" "$STAMPS"
export GOWORK=off
export GOBIN=$BIN

# Tested with CGO off where the component allows it, so binaries are static.
say() { printf '%-22s %s\n' "$1" "$2"; }

# fresh NAME KEY: true when the component's stamp matches KEY and its
# binaries exist (the remaining args), so it can be skipped.
fresh() {
  local name=$1 key=$2; shift 2
  [ -f "$STAMPS/$name" ] && [ "$(cat "$STAMPS/$name")" = "$key" ] || return 1
  local b
  for b in "$@"; do [ -x "$BIN/$b" ] || return 1; done
}
stamp() { echo "$2" >"$STAMPS/$1"; }

timed() {
  local name=$1; shift
  local t0=$SECONDS
  if ! "$@" >"$HERMES_CACHE/$name.log" 2>&1; then
    say "$name" "FAILED (log: $HERMES_CACHE/$name.log)"
    tail -30 "$HERMES_CACHE/$name.log" >&2
    exit 1
  fi
  say "$name" "built in $((SECONDS - t0))s"
}

debian() {
  local missing=()
  for p in $DEBIAN_PACKAGES; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -eq 0 ]; then say debian "ok ($DEBIAN_PACKAGES)"; return; fi
  say debian "installing ${missing[*]}"
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
}

go_install() { # name key binaries... -- packages...
  local name=$1 key=$2; shift 2
  local bins=()
  while [ "$1" != "--" ]; do bins+=("$1"); shift; done
  shift
  if fresh "$name" "$key" "${bins[@]}"; then say "$name" "ok ($key)"; return; fi
  timed "$name" go install -trimpath -ldflags "-s -w" "$@"
  stamp "$name" "$key"
}

containerd() {
  # CGO is needed by nothing here; containerd's own default build tags.
  go_install containerd "$CONTAINERD_VERSION" containerd ctr containerd-shim-runc-v2 -- \
    "github.com/containerd/containerd/v2/cmd/containerd@$CONTAINERD_VERSION" \
    "github.com/containerd/containerd/v2/cmd/ctr@$CONTAINERD_VERSION" \
    "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2@$CONTAINERD_VERSION"
}

registry() {
  go_install registry "$REGISTRY_VERSION" registry -- \
    "github.com/distribution/distribution/v3/cmd/registry@$REGISTRY_VERSION"
}

crane() {
  go_install crane "$CRANE_VERSION" crane -- \
    "github.com/google/go-containerregistry/cmd/crane@$CRANE_VERSION"
}

oras() {
  go_install oras "$ORAS_VERSION" oras -- "oras.land/oras/cmd/oras@$ORAS_VERSION"
}

versitygw() {
  # S3-compatible object storage: the shared store of registry-replica tests.
  go_install versitygw "$VERSITYGW_VERSION" versitygw -- \
    "github.com/versity/versitygw/cmd/versitygw@$VERSITYGW_VERSION"
}

etcd() {
  local key="$ETCD_VERSION $(sha256sum "$here/etcd/go.mod" | cut -c1-12)"
  if fresh etcd "$key" etcd; then say etcd "ok ($ETCD_VERSION)"; return; fi
  timed etcd bash -c "cd '$here/etcd' && go build -trimpath -ldflags '-s -w' -o '$BIN/etcd' ."
  stamp etcd "$key"
}

kubernetes() {
  local key="$KUBERNETES_VERSION $(sha256sum "$here/k8s/go.mod" | cut -c1-12)"
  local cmds=(kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet)
  if fresh kubernetes "$key" "${cmds[@]}"; then say kubernetes "ok ($KUBERNETES_VERSION)"; return; fi
  local v=${KUBERNETES_VERSION#v} pkg=k8s.io/component-base/version
  local ld="-s -w -X $pkg.gitVersion=$KUBERNETES_VERSION -X $pkg.gitMajor=${v%%.*} -X $pkg.gitMinor=$(echo "$v" | cut -d. -f2) -X $pkg.gitTreeState=clean"
  local c
  for c in "${cmds[@]}"; do
    # -mod=mod: k8s.io/kubernetes needs the replaces above resolved; go.sum is kept.
    timed "$c" bash -c "cd '$here/k8s' && GOFLAGS=-mod=mod go build -trimpath -ldflags '$ld' -o '$BIN/$c' k8s.io/kubernetes/cmd/$c"
  done
  stamp kubernetes "$key"
}

all=(debian containerd registry crane oras versitygw etcd kubernetes)
want=("$@")
[ ${#want[@]} -gt 0 ] || want=("${all[@]}")
t0=$SECONDS
for c in "${want[@]}"; do
  case $c in
    debian|containerd|registry|crane|oras|versitygw|etcd|kubernetes) "$c" ;;
    *) echo "install.sh: unknown component $c (known: ${all[*]})" >&2; exit 2 ;;
  esac
done
say total "$((SECONDS - t0))s; binaries in $BIN"
