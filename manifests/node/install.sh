#!/usr/bin/env bash
# Installs hermes-snapshotter on a node that runs containerd v2 under
# systemd: the binary, its config, the systemd socket and service, and the
# containerd snippet. Run as root from a checkout (or a copy of this
# directory):
#   manifests/node/install.sh BINARY [CACHE_URL]
# BINARY is a built hermes-snapshotter (make build: bin/hermes-snapshotter).
# CACHE_URL is the cache registry (http://<hermes-registry ClusterIP>:5000);
# without it, the node finds no index in the cache (upstream discovery
# only, if enabled). An existing file is never overwritten: the new one is
# written beside it as FILE.hermes-new and named at the end.
set -euo pipefail

usage() { echo "usage: $0 BINARY [CACHE_URL]" >&2; exit 2; }
[ $# -ge 1 ] && [ $# -le 2 ] || usage
bin=$1 cache_url=${2:-}
here=$(cd "$(dirname "$0")" && pwd)
[ "$(id -u)" = 0 ] || { echo "$0: run as root" >&2; exit 1; }
[ -x "$bin" ] || { echo "$0: $bin is not an executable" >&2; exit 1; }
[ -e /dev/fuse ] || modprobe fuse || { echo "$0: no /dev/fuse and modprobe fuse failed: lazy layers need FUSE" >&2; exit 1; }
command -v containerd >/dev/null || { echo "$0: containerd not found" >&2; exit 1; }
case "$(containerd --version)" in *" v2."*|*" 2."*) ;; *) echo "$0: containerd v2 needed, have: $(containerd --version)" >&2; exit 1;; esac

skipped=()
# put SRC DST MODE: install unless DST exists with other content.
put() {
  if [ -e "$2" ] && ! cmp -s "$1" "$2"; then
    install -m "$3" "$1" "$2.hermes-new"; skipped+=("$2"); return
  fi
  install -D -m "$3" "$1" "$2"
}

install -D -m 0755 "$bin" /usr/local/bin/hermes-snapshotter
tmp=$(mktemp); trap 'rm -f "$tmp"' EXIT
sed "s#^cache_url = \"\"#cache_url = \"$cache_url\"#" "$here/config.toml" >"$tmp"
mkdir -p /etc/hermes-snapshotter /etc/containerd/conf.d
put "$tmp" /etc/hermes-snapshotter/config.toml 0644
put "$here/containerd-config.toml" /etc/containerd/conf.d/hermes.toml 0644
put "$here/hermes-snapshotter.socket" /etc/systemd/system/hermes-snapshotter.socket 0644
put "$here/hermes-snapshotter.service" /etc/systemd/system/hermes-snapshotter.service 0644
put "$here/hermes-snapshotter-holder.service" /etc/systemd/system/hermes-snapshotter-holder.service 0644

if ! grep -qs '^imports *=.*conf\.d' /etc/containerd/config.toml; then
  echo "NOTE: /etc/containerd/config.toml does not import conf.d: add" >&2
  echo '  imports = ["/etc/containerd/conf.d/*.toml"]' >&2
  echo "at its top (or merge /etc/containerd/conf.d/hermes.toml into it), then restart containerd." >&2
fi
for f in "${skipped[@]}"; do
  echo "NOTE: $f exists and differs: the new version is $f.hermes-new" >&2
done

systemctl daemon-reload
# The holder is started (never restarted: that would abort running
# containers' lazy layers); the snapshotter is restarted onto the new binary.
systemctl enable hermes-snapshotter-holder.service hermes-snapshotter.socket hermes-snapshotter.service
systemctl start hermes-snapshotter-holder.service hermes-snapshotter.socket
systemctl restart hermes-snapshotter.service
systemctl restart containerd
echo "hermes-snapshotter installed; containerd restarted. Check: systemctl status hermes-snapshotter; ctr plugins ls | grep hermes"
