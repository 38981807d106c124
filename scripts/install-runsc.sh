#!/usr/bin/env bash
# Install gVisor's runsc for the isolating sandboxer's gvisor handler, from the system's own
# suite (Debian 12 ships runsc 0.0~20221219; it has no containerd shim of its own: the
# sandboxer drives it through containerd's runc shim with the BinaryName option).
# Idempotent: nothing is done when it is installed. Root only; apt-get only.
set -euo pipefail

log() { echo "install-runsc: $*" >&2; }
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

if ! installed runsc; then
    updated=0
    if ! has_candidate runsc; then
        log "apt-get update (no candidate for runsc)"
        apt-get -q update >&2 || die "apt-get update failed"
        updated=1
    fi
    log "installing runsc"
    if ! apt-get -q install -y --no-install-recommends runsc >&2; then
        ((updated)) && die "apt-get install runsc failed"
        log "install failed; apt-get update and retry"
        apt-get -q update >&2 || die "apt-get update failed"
        apt-get -q install -y --no-install-recommends runsc >&2 || die "apt-get install runsc failed"
    fi
fi
[[ -x /usr/bin/runsc ]] || die "/usr/bin/runsc missing although runsc is installed"
log "$(/usr/bin/runsc --version 2>&1 | head -n 1)"
