#!/usr/bin/env bash
# Removes what a `make demo` that was killed hard (SIGKILL, a crash) left
# behind. A demo stopped with Ctrl-C cleans up after itself; its components
# also die with it, so what can be left is what outlives a process: container
# shims and their containers, mounts, the kubelet's cgroups, tc rules.
# Everything the demo starts lives below /tmp/hermes-*.
set -u
[[ $(id -u) == 0 ]] || { echo "demo-down: needs root" >&2; exit 1; }
for pid in $(pgrep -f -- '-address /tmp/hermes-ctrd-'); do kill -KILL "$pid" 2>/dev/null && echo "killed shim $pid"; done
for pid in $(pgrep -f -- '/tmp/hermes-'); do kill -KILL "$pid" 2>/dev/null && echo "killed $(ps -o comm= -p "$pid" 2>/dev/null) $pid"; done
awk 'index($5, "/tmp/hermes-") == 1 {print $5}' /proc/self/mountinfo | sort -r | while read -r m; do umount -l "$m" && echo "unmounted $m"; done
for root in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods; do
	[[ -d $root ]] && find "$root" -depth -type d -exec rmdir {} \; 2>/dev/null
done
if tc qdisc show dev lo | grep -q "qdisc htb 1: root"; then tc qdisc del dev lo root && echo "removed the tc shaping on lo"; fi
rm -f /var/lib/kubelet/device-plugins/kubelet.sock
find /var/log/containers -maxdepth 1 -type l -lname '/tmp/hermes-*' -delete 2>/dev/null
rm -rf /tmp/hermes-*
echo "demo stopped"
