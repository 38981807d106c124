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

bash "$(dirname "${BASH_SOURCE[0]}")/apt-install.sh" install-runsc runsc
[[ -x /usr/bin/runsc ]] || die "/usr/bin/runsc missing although runsc is installed"
log "$(/usr/bin/runsc --version 2>&1 | head -n 1)"
