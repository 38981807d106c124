#!/usr/bin/env bash
# Install Debian packages from the system's own suite, for the test suite's real parts.
# Usage: apt-install.sh NAME PACKAGE... ; NAME prefixes the log lines. Idempotent: nothing
# is done when every package is installed. Root only; apt-get only; an update is made only
# when a package has no candidate or an install fails (a fresh machine may have no lists).
set -euo pipefail

name=${1:?usage: apt-install.sh NAME PACKAGE...}
shift
log() { echo "$name: $*" >&2; }
die() {
    log "error: $*"
    exit 1
}

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
for p in "$@"; do
    installed "$p" || missing+=("$p")
done
((${#missing[@]})) || exit 0

[[ $(id -u) == 0 ]] || die "run as root: apt-get needs it"
command -v apt-get >/dev/null || die "apt-get not found; this script expects a Debian system"
command -v dpkg-query >/dev/null || die "dpkg-query not found; this script expects a Debian system"
export DEBIAN_FRONTEND=noninteractive

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
