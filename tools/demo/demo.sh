#!/usr/bin/env bash
# Hermes on one machine: the same ≥1 GB image started once with containerd's
# overlayfs and once lazily through hermes-snapshotter, over an origin link
# shaped to DEMO_BANDWIDTH. Then it stays up for exploring; Ctrl-C (or
# `tools/demo/demo.sh down`) removes every process, mount and tc rule.
#
#   tools/demo/demo.sh [up]     build, start, measure, stay up (needs root)
#   tools/demo/demo.sh down     stop what a previous `up` left running
#
# Components come from $HERMES_CACHE/bin (`make deps`); Hermes' own binaries
# are built from this checkout. Settings (environment):
#   DEMO_BANDWIDTH    origin link, a tc rate (default 100mbit)
#   DEMO_DIR          state, logs and configs (default /tmp/hermes-demo)
#   DEMO_ORIGIN_PORT  origin registry port (default 5180)
#   DEMO_CACHE_PORT   hermes-registry port (default 5181)
#   DEMO_LAYERS       imagegen layers (default random:640MiB,compressible:1600MiB:files=20000)
#   DEMO_NO_WAIT=1    print the table and stop instead of staying up
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERMES_CACHE=${HERMES_CACHE:-$HOME/.cache/hermes}
DEMO_DIR=${DEMO_DIR:-/tmp/hermes-demo}
DEMO_BANDWIDTH=${DEMO_BANDWIDTH:-100mbit}
ORIGIN_PORT=${DEMO_ORIGIN_PORT:-5180}
CACHE_PORT=${DEMO_CACHE_PORT:-5181}
DEMO_LAYERS=${DEMO_LAYERS:-random:640MiB,compressible:1600MiB:files=20000}
ORIGIN=127.0.0.1:$ORIGIN_PORT
CACHE=127.0.0.1:$CACHE_PORT
IMAGE=$ORIGIN/demo/app:v1
BIN=$DEMO_DIR/bin
CTR_SOCK=$DEMO_DIR/containerd/containerd.sock
SN_SOCK=$DEMO_DIR/hermes-snapshotter/hermes.sock
export PATH=$BIN:$HERMES_CACHE/bin:$PATH

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
die() { printf 'demo: %s\n' "$*" >&2; exit 1; }
ctr_() { ctr -a "$CTR_SOCK" "$@"; }

# ---- teardown -------------------------------------------------------------

down() {
	set +e
	if [[ -f $DEMO_DIR/pids ]]; then
		# Containers first, while containerd still answers.
		if [[ -S $CTR_SOCK ]]; then
			for ns in demo-overlayfs demo-hermes; do
				for t in $(ctr_ -n "$ns" tasks ls -q 2>/dev/null); do ctr_ -n "$ns" tasks kill -s SIGKILL "$t" >/dev/null 2>&1; done
			done
		fi
		# Reverse start order: containerd before the snapshotter and registries.
		tac "$DEMO_DIR/pids" | while read -r pid name; do
			kill -TERM "$pid" 2>/dev/null && for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
			kill -KILL "$pid" 2>/dev/null && echo "killed $name ($pid)"
		done
		rm -f "$DEMO_DIR/pids"
	fi
	# Shims of this containerd, then anything still mounted below DEMO_DIR.
	pkill -KILL -f "containerd-shim-runc-v2 .*-address $CTR_SOCK" 2>/dev/null
	awk -v d="$DEMO_DIR/" 'index($5, d) == 1 {print $5}' /proc/self/mountinfo | sort -r | while read -r m; do
		umount -l "$m" 2>/dev/null
	done
	if tc filter show dev lo parent 1: 2>/dev/null | grep -q "pref $ORIGIN_PORT "; then
		tc filter del dev lo parent 1: protocol ip prio "$ORIGIN_PORT"
		tc class del dev lo classid "1:$(printf %x "$ORIGIN_PORT")"
		[[ -z $(tc class show dev lo) ]] && tc qdisc del dev lo root
	fi
	set -e
}

if [[ ${1:-up} == down ]]; then
	down
	echo "demo stopped; logs are in $DEMO_DIR/logs"
	exit 0
fi
[[ ${1:-up} == up ]] || die "usage: $0 [up|down]"
[[ $(id -u) == 0 ]] || die "needs root (containerd, FUSE, tc)"
for b in containerd ctr containerd-shim-runc-v2 registry; do
	command -v "$b" >/dev/null || die "$b not found: run 'make deps'"
done
command -v runc >/dev/null || die "runc not found (Debian runc)"
command -v tc >/dev/null || die "tc not found (Debian iproute2)"
[[ -e /dev/fuse ]] || die "/dev/fuse missing"
if [[ -f $DEMO_DIR/pids ]]; then
	say "stopping a previous demo"
	down
fi
trap 'echo; say "stopping"; down; exit 130' INT TERM
trap 'down' EXIT

# ---- build and start ------------------------------------------------------

mkdir -p "$BIN" "$DEMO_DIR/logs"
say "building Hermes (hermes-registry, hermes-snapshotter, hermes, imagegen)"
(cd "$REPO" && CGO_ENABLED=1 go build -o "$BIN/" ./registry/cmd/hermes-registry ./snapshotter/cmd/hermes-snapshotter \
	./controller/cmd/hermes ./tools/imagegen/cmd/imagegen)

start() { # name cmd...: run in the background, log, remember the PID
	local name=$1
	shift
	"$@" >"$DEMO_DIR/logs/$name.log" 2>&1 &
	echo "$! $name" >>"$DEMO_DIR/pids"
}
wait_for() { # what check-cmd...
	local what=$1
	shift
	for _ in $(seq 300); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
	die "$what did not come up; see $DEMO_DIR/logs"
}

rm -rf "$DEMO_DIR/origin" "$DEMO_DIR/cache" "$DEMO_DIR/containerd" "$DEMO_DIR/hermes-snapshotter" "$DEMO_DIR/certs.d"
mkdir -p "$DEMO_DIR/origin" "$DEMO_DIR/containerd" "$DEMO_DIR/hermes-snapshotter" "$DEMO_DIR/certs.d/$ORIGIN"

cat >"$DEMO_DIR/origin/config.yml" <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: $DEMO_DIR/origin/storage
http:
  addr: $ORIGIN
EOF
say "origin registry (distribution) on $ORIGIN"
start origin env OTEL_TRACES_EXPORTER=none registry serve "$DEMO_DIR/origin/config.yml"
wait_for "origin registry" curl -sf "http://$ORIGIN/v2/"

say "cache registry (hermes-registry) on $CACHE"
start hermes-registry hermes-registry -addr "$CACHE" -ops-addr 127.0.0.1:$((CACHE_PORT + 100)) -root "$DEMO_DIR/cache"
wait_for "hermes-registry" curl -sf "http://$CACHE/v2/"

printf 'server = "http://%s"\n[host."http://%s"]\n  capabilities = ["pull", "resolve", "push"]\n' "$ORIGIN" "$ORIGIN" \
	>"$DEMO_DIR/certs.d/$ORIGIN/hosts.toml"
cat >"$DEMO_DIR/hermes-snapshotter/config.toml" <<EOF
[hermes]
cache_url = "http://$CACHE"
hosts_dir = "$DEMO_DIR/certs.d"
docker_config = false
[content_store]
containerd_address = "$CTR_SOCK"
EOF
say "hermes-snapshotter"
start hermes-snapshotter hermes-snapshotter --config "$DEMO_DIR/hermes-snapshotter/config.toml" \
	--root "$DEMO_DIR/hermes-snapshotter/root" --socket "$SN_SOCK" --metrics-address 127.0.0.1:$((CACHE_PORT + 101))
wait_for "hermes-snapshotter" curl -sf "http://127.0.0.1:$((CACHE_PORT + 101))/healthz"

mkdir -p "$DEMO_DIR/containerd/root/io.containerd.snapshotter.v1.hermes"
cat >"$DEMO_DIR/containerd/config.toml" <<EOF
version = 3
root = "$DEMO_DIR/containerd/root"
state = "$DEMO_DIR/containerd/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.cri.v1.images", "io.containerd.cri.v1.runtime", "io.containerd.podsandbox.controller.v1.podsandbox", "io.containerd.sandbox.controller.v1.shim", "io.containerd.nri.v1.nri"]
[grpc]
  address = "$CTR_SOCK"
[ttrpc]
  address = "$CTR_SOCK.ttrpc"
[plugins.'io.containerd.transfer.v1.local']
  config_path = "$DEMO_DIR/certs.d"
  [[plugins.'io.containerd.transfer.v1.local'.unpack_config]]
    platform = "linux/amd64"
    snapshotter = "overlayfs"
  [[plugins.'io.containerd.transfer.v1.local'.unpack_config]]
    platform = "linux/amd64"
    snapshotter = "hermes"
[proxy_plugins.hermes]
  type = "snapshot"
  address = "$SN_SOCK"
  [proxy_plugins.hermes.exports]
    enable_remote_snapshot_annotations = "true"
EOF
say "containerd"
start containerd containerd --config "$DEMO_DIR/containerd/config.toml"
wait_for containerd ctr -a "$CTR_SOCK" version

# ---- the image and its index ----------------------------------------------

say "pushing the demo image $IMAGE (layers busybox,$DEMO_LAYERS; generated once, then cached)"
# The workload: read a few files of each data layer, then say so.
WORKLOAD='n=0; for f in $(find /random-* -type f | head -n 3) $(find /tree-* -type f | head -n 60); do cat "$f" >/dev/null && n=$((n+1)); done; echo "READY: read $n files"'
json=${WORKLOAD//\\/\\\\}
json=${json//\"/\\\"}
imagegen --ref "$IMAGE" --layers "$DEMO_LAYERS" --entrypoint '["/bin/sh", "-c"]' --cmd "[\"$json\"]"

say "hermes build: SOCI index of $IMAGE into the cache"
hermes build --cache "$CACHE" "$IMAGE"

# ---- the measurement ------------------------------------------------------

say "shaping the origin's link to $DEMO_BANDWIDTH (tc htb on lo, port $ORIGIN_PORT)"
if ! tc qdisc show dev lo | grep -q "qdisc htb 1: root"; then
	tc qdisc add dev lo root handle 1: htb
fi
tc class add dev lo parent 1: classid "1:$(printf %x "$ORIGIN_PORT")" htb rate "$DEMO_BANDWIDTH" ceil "$DEMO_BANDWIDTH" quantum 65536
tc filter add dev lo parent 1: protocol ip prio "$ORIGIN_PORT" u32 match ip sport "$ORIGIN_PORT" 0xffff flowid "1:$(printf %x "$ORIGIN_PORT")"

origin_bytes() { # bytes the origin sent since log offset $1
	tail -c +"$(($1 + 1))" "$DEMO_DIR/logs/origin.log" | awk '/HTTP\/1\.[01]" [0-9]+ [0-9]+/ {
		for (i = 1; i < NF; i++) if ($i ~ /HTTP\/1\.[01]"$/) { s += $(i + 2); break } } END { print s + 0 }'
}
now() { date +%s.%N; }

declare -A READY BYTES
for sn in overlayfs hermes; do
	ns=demo-$sn
	say "starting the container with $sn"
	off=$(stat -c %s "$DEMO_DIR/logs/origin.log")
	t0=$(now)
	ctr_ -n "$ns" images pull --snapshotter "$sn" "$IMAGE" >"$DEMO_DIR/logs/pull-$sn.log" 2>&1 || die "pull failed: $DEMO_DIR/logs/pull-$sn.log"
	line=$(ctr_ -n "$ns" run --rm --snapshotter "$sn" "$IMAGE" "demo-$sn" | tee "$DEMO_DIR/logs/run-$sn.log" | grep READY) ||
		die "no ready line from the $sn container: $DEMO_DIR/logs/run-$sn.log"
	t1=$(now)
	READY[$sn]=$(echo "$t1 - $t0" | bc)
	BYTES[$sn]=$(origin_bytes "$off")
	printf '    %s  (%.1f s)\n' "$line" "${READY[$sn]}"
done

mb() { echo "scale=1; $1 / 1000000" | bc; }
echo
printf '%-12s %18s %22s\n' "snapshotter" "time to ready (s)" "bytes from origin (MB)"
for sn in overlayfs hermes; do
	printf '%-12s %18.1f %22s\n' "$sn" "${READY[$sn]}" "$(mb "${BYTES[$sn]}")"
done
printf '%-12s %18.1fx %21.1fx\n' "ratio" "$(echo "${READY[overlayfs]} / ${READY[hermes]}" | bc -l)" \
	"$(echo "${BYTES[overlayfs]} / (${BYTES[hermes]} + 1)" | bc -l)"
echo

[[ ${DEMO_NO_WAIT:-} == 1 ]] && exit 0

REPO_IN_CACHE=${ORIGIN/:/_}/demo/app
cat <<EOF
The demo stays up. Try:
  d=\$(crane digest --insecure $IMAGE)      # the image manifest's digest
  curl -s http://$CACHE/v2/$REPO_IN_CACHE/referrers/\$d   # its SOCI index, found in the cache by that digest
  oras manifest fetch --plain-http $CACHE/$REPO_IN_CACHE@<index digest>   # the index: one zTOC per layer
  crane manifest --insecure $IMAGE
  ctr -a $CTR_SOCK -n demo-hermes snapshots --snapshotter hermes ls
  ctr -a $CTR_SOCK -n demo-hermes run --rm -t --snapshotter hermes $IMAGE shell /bin/sh
  curl -s 127.0.0.1:$((CACHE_PORT + 101))/metrics | grep ^hermes_snapshotter
  mount -t fuse.rawBridge | grep $DEMO_DIR        # the lazily mounted layers
Logs: $DEMO_DIR/logs.  Ctrl-C (or: $0 down) removes every process, mount and tc rule.
EOF
while true; do sleep 3600 & wait $!; done
