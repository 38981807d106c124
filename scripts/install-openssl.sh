#!/usr/bin/env bash
# The openssl command, with which the TLS registry tests make their CA and certificate.
set -euo pipefail
command -v openssl >/dev/null && exit 0
exec bash "$(dirname "$0")/apt-install.sh" install-openssl openssl
