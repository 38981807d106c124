#!/usr/bin/env bash
# Install what the isolating sandboxer's networks need, from the system's own suite:
# Debian's containernetworking-plugins (the CNI plugins, in /usr/lib/cni) and iptables
# (which the bridge and portmap plugins, and the sandboxer's egress rules, run).
# Idempotent: nothing is done when both are installed. Root only; apt-get only.
set -euo pipefail

log() { echo "install-cni: $*" >&2; }
die() {
    log "error: $*"
    exit 1
}

bash "$(dirname "${BASH_SOURCE[0]}")/apt-install.sh" install-cni containernetworking-plugins iptables
for plugin in bridge host-local portmap loopback bandwidth; do
    [[ -x /usr/lib/cni/$plugin ]] || die "/usr/lib/cni/$plugin missing although containernetworking-plugins is installed"
done
command -v iptables-restore >/dev/null || die "iptables-restore missing although iptables is installed"
log "CNI plugins in /usr/lib/cni; $(iptables --version)"
