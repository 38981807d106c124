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

[[ $(id -u) == 0 ]] || die "run as root: apt-get needs it"
command -v apt-get >/dev/null || die "apt-get not found; this script expects a Debian system"
command -v dpkg-query >/dev/null || die "dpkg-query not found; this script expects a Debian system"

export DEBIAN_FRONTEND=noninteractive

installed() {
    local status
    status=$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null) || return 1
    [[ $status == "install ok installed" ]]
}
has_candidate() {
    local policy
    policy=$(apt-cache policy "$1" 2>/dev/null) || return 1
    [[ $policy =~ Candidate:\ [^\(] ]]
}

missing=()
installed containernetworking-plugins || missing+=(containernetworking-plugins)
installed iptables || missing+=(iptables)
if ((${#missing[@]})); then
    updated=0
    for p in "${missing[@]}"; do
        if ! has_candidate "$p"; then
            log "apt-get update (no candidate for $p)"
            apt-get -q update >&2 || die "apt-get update failed"
            updated=1
            break
        fi
    done
    log "installing ${missing[*]}"
    if ! apt-get -q install -y --no-install-recommends "${missing[@]}" >&2; then
        ((updated)) && die "apt-get install ${missing[*]} failed"
        log "install failed; apt-get update and retry"
        apt-get -q update >&2 || die "apt-get update failed"
        apt-get -q install -y --no-install-recommends "${missing[@]}" >&2 ||
            die "apt-get install ${missing[*]} failed"
    fi
fi
for plugin in bridge host-local portmap loopback bandwidth; do
    [[ -x /usr/lib/cni/$plugin ]] || die "/usr/lib/cni/$plugin missing although containernetworking-plugins is installed"
done
command -v iptables-restore >/dev/null || die "iptables-restore missing although iptables is installed"
log "CNI plugins in /usr/lib/cni; $(iptables --version)"
