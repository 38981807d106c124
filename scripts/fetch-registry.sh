#!/usr/bin/env bash
# Obtain an OCI registry for the image tests: Debian's `docker-registry` (distribution 2.8)
# from the system's own suite, downloaded with apt-get and unpacked (dpkg -x) into
# .cache/registry; nothing is installed system-wide. The tests start it on 127.0.0.1.
# Idempotent: a second run works offline. Prints nothing on success but what it did.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache="$repo/.cache/registry"
binary="$cache/root/usr/bin/docker-registry"

log() { echo "fetch-registry: $*" >&2; }
die() {
    log "error: $*"
    exit 1
}

if [[ -x $binary ]] && "$binary" --version >/dev/null 2>&1; then
    exit 0
fi
[[ $(id -u) == 0 ]] || die "run as root: apt-get needs it"
command -v apt-get >/dev/null || die "apt-get not found; this script expects a Debian system"

export DEBIAN_FRONTEND=noninteractive
has_candidate() {
    local policy
    policy=$(apt-cache policy docker-registry 2>/dev/null) || return 1
    [[ $policy =~ Candidate:\ [^\(] ]]
}
if ! has_candidate; then
    log "apt-get update (no candidate for docker-registry)"
    apt-get -q update >&2 || die "apt-get update failed"
fi
has_candidate || die "no docker-registry package in the system's suites"

mkdir -p "$cache/debs"
(
    cd "$cache/debs"
    # _apt must be able to write the download: the directory is ours, root's.
    apt-get -q -o APT::Sandbox::User=root download docker-registry >&2
) || die "apt-get download docker-registry failed"
deb=$(ls -t "$cache"/debs/docker-registry_*.deb | head -n 1)
rm -rf "$cache/root.new"
dpkg -x "$deb" "$cache/root.new" || die "dpkg -x $deb failed"
rm -rf "$cache/root"
mv "$cache/root.new" "$cache/root"
[[ -x $binary ]] || die "$binary missing from $deb"
log "unpacked $(basename "$deb") into $cache/root"
