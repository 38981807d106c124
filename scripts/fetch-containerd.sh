#!/usr/bin/env bash
# Obtain a containerd >= 2.0 for the real-daemon tests and lay out a private bin dir in
# .cache/containerd/bin (containerd, containerd-shim-runc-v2, ctr, runc).
#
# Choice of containerd, first match wins:
#   1. $CONTAINERD_BIN: a directory holding containerd, or a containerd binary (used as is);
#   2. a containerd >= 2.0 already on PATH;
#   3. Debian unstable's `containerd` package, downloaded with a private apt setup and
#      unpacked (dpkg -x) into .cache/containerd. Debian 12 itself only ships 1.6, which has
#      no sandbox API. The system's apt sources are never changed and nothing is dpkg -i'd.
#
# runc always comes from the system's own suite: the runc that unstable's containerd pulls
# in needs a newer glibc than Debian 12 has. Idempotent; a second run works offline.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache="$repo/.cache/containerd"
bindir="$cache/bin"
pkgroot="$cache/pkg-root"
system_runc=/usr/sbin/runc

log() { echo "fetch-containerd: $*" >&2; }
die() {
    log "error: $*"
    exit 1
}

# Prints the x.y.z version of a containerd binary, or nothing if it does not run.
# (No pipes into grep -q/head here: with pipefail an early exit reads as failure.)
version_of() {
    local out
    out=$("$1" --version 2>/dev/null) || true
    # "containerd github.com/containerd/containerd/v2 2.1.9+unknown <revision>"
    if [[ $out =~ (^|[[:space:]])v?([0-9]+\.[0-9]+\.[0-9]+) ]]; then
        echo "${BASH_REMATCH[2]}"
    fi
}

at_least_2() {
    local v=$1
    [[ -n $v && ${v%%.*} =~ ^[0-9]+$ && ${v%%.*} -ge 2 ]]
}

[[ $(id -u) == 0 ]] || die "run as root: apt-get and containerd need it"
command -v apt-get >/dev/null || die "apt-get not found; this script expects a Debian system"
command -v dpkg-query >/dev/null || die "dpkg-query not found; this script expects a Debian system"

# ---------------------------------------------------------------------------------------------
# runc and busybox-static from the system's own suite.

export DEBIAN_FRONTEND=noninteractive
bash "$repo/scripts/apt-install.sh" fetch-containerd runc busybox-static
[[ -x $system_runc ]] || die "$system_runc missing although the runc package is installed"
[[ -x /bin/busybox ]] || die "/bin/busybox missing although busybox-static is installed"

# ---------------------------------------------------------------------------------------------
# containerd.

# Links the private bin dir to a directory holding containerd, its runc shim and ctr
# (relative links inside the cache, so the checkout can move).
layout_bin() {
    local src=$1 target=$1 tool
    [[ $src == "$pkgroot"/* ]] && target=../${src#"$cache"/}
    mkdir -p "$bindir"
    for tool in containerd containerd-shim-runc-v2 ctr; do
        [[ -x $src/$tool ]] || die "$src/$tool not found"
        ln -sfn "$target/$tool" "$bindir/$tool"
    done
    ln -sfn "$system_runc" "$bindir/runc"
}

# Prints "URI<TAB>SIGNED-BY" of the first enabled deb entry for the system's own suite.
system_mirror() {
    local codename files=()
    codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
    [[ -n $codename ]] || return 1
    [[ -f /etc/apt/sources.list ]] && files+=(/etc/apt/sources.list)
    shopt -s nullglob
    files+=(/etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources)
    shopt -u nullglob
    ((${#files[@]})) || return 1
    awk -v want="$codename" '
        function has(list, word) { return (" " list " ") ~ (" " word " ") }
        function flush() {
            if (!done && has(types, "deb") && has(suites, want) && has(comps, "main") &&
                tolower(enabled) != "no" && uris != "") {
                split(uris, u, " ")
                print u[1] "\t" signed
                done = 1
            }
            types = uris = suites = comps = signed = enabled = ""
        }
        function value() { v = $0; sub(/^[^:]*:[ \t]*/, "", v); return v }
        FNR == 1 { flush(); deb822 = (FILENAME ~ /\.sources$/) }
        /^[ \t]*#/ { next }
        deb822 && /^[ \t]*$/ { flush(); next }
        deb822 && tolower($0) ~ /^types:/ { types = value(); next }
        deb822 && tolower($0) ~ /^uris:/ { uris = value(); next }
        deb822 && tolower($0) ~ /^suites:/ { suites = value(); next }
        deb822 && tolower($0) ~ /^components:/ { comps = value(); next }
        deb822 && tolower($0) ~ /^enabled:/ { enabled = value(); next }
        deb822 && tolower($0) ~ /^signed-by:/ { signed = value(); if (signed !~ /^\//) signed = ""; next }
        !deb822 && $1 == "deb" {
            i = 2; s = ""
            if ($2 ~ /^\[/) {
                for (; i <= NF; i++) {
                    if ($i ~ /^\[?signed-by=/) { s = $i; sub(/^\[?signed-by=/, "", s); sub(/\]$/, "", s) }
                    if ($i ~ /\]$/) { i++; break }
                }
            }
            types = "deb"; uris = $i; suites = $(i + 1); comps = ""
            for (j = i + 2; j <= NF; j++) comps = comps " " $j
            signed = s
            flush()
        }
        END { flush() }
    ' "${files[@]}"
}

fetch_unstable() {
    local mirror uri signed apt deb opts
    mirror=$(system_mirror) || true
    [[ -n $mirror ]] || die "no Debian mirror for the system's own suite found in /etc/apt/sources.list or /etc/apt/sources.list.d/"
    uri=${mirror%%$'\t'*}
    signed=${mirror#*$'\t'}
    apt="$cache/apt"
    rm -rf "$apt"
    mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial" "$apt/parts" "$apt/download"
    if [[ -n $signed ]]; then
        echo "deb [signed-by=$signed] $uri unstable main" >"$apt/sources.list"
    else
        echo "deb $uri unstable main" >"$apt/sources.list"
    fi
    # Only the private list, lists and caches; no system pinning (it could hide unstable).
    opts=(
        -q
        -o "Dir::Etc::SourceList=$apt/sources.list"
        -o Dir::Etc::SourceParts=/dev/null
        -o "Dir::State::Lists=$apt/lists"
        -o "Dir::Cache=$apt/cache"
        -o Dir::Etc::Preferences=/dev/null
        -o "Dir::Etc::PreferencesParts=$apt/parts"
        -o Acquire::Languages=none
        -o Acquire::IndexTargets::deb::Contents-deb::DefaultEnabled=false
        -o APT::Get::List-Cleanup=false
    )
    log "downloading Debian unstable's containerd from $uri"
    apt-get "${opts[@]}" update >&2 || die "apt-get update of the private unstable list failed"
    # apt drops privileges to _apt for downloads: let it write there.
    chown _apt "$apt/download" 2>/dev/null || true
    (cd "$apt/download" && apt-get "${opts[@]}" download containerd >&2) ||
        die "apt-get download containerd (unstable) failed"
    local debs=("$apt/download"/containerd_*.deb)
    [[ -f ${debs[0]} ]] || die "apt-get download produced no containerd .deb"
    deb=${debs[0]}
    rm -rf "$pkgroot.new"
    dpkg -x "$deb" "$pkgroot.new" || die "dpkg -x $deb failed"
    rm -rf "$pkgroot"
    mv "$pkgroot.new" "$pkgroot"
    # Keep only the newest .deb, for reference; the indexes are large and no longer needed.
    rm -f "$cache"/containerd_*.deb
    mv "$deb" "$cache/"
    rm -rf "$apt"
}

if [[ -n ${CONTAINERD_BIN:-} ]]; then
    bin=$CONTAINERD_BIN
    [[ -d $bin ]] && bin=$bin/containerd
    [[ -x $bin ]] || die "CONTAINERD_BIN=$CONTAINERD_BIN: no containerd binary there"
    version=$(version_of "$bin")
    at_least_2 "$version" || die "CONTAINERD_BIN=$CONTAINERD_BIN: containerd ${version:-(does not run)} is older than 2.0"
    for tool in containerd-shim-runc-v2 ctr; do
        [[ -x $(dirname "$bin")/$tool ]] || log "warning: $(dirname "$bin")/$tool not found; PATH must provide it"
    done
    log "using CONTAINERD_BIN: containerd $version"
    "$bin" --version
    exit 0
fi

src=""
path_bin=$(command -v containerd 2>/dev/null || true)
# Skip our own links, which may be on PATH.
if [[ -n $path_bin && $(readlink -f "$path_bin") != "$cache"/* ]]; then
    version=$(version_of "$path_bin")
    if at_least_2 "$version"; then
        log "using containerd $version from PATH ($path_bin)"
        src=$(dirname "$path_bin")
    else
        log "containerd on PATH is ${version:-unusable}, older than 2.0: not used"
    fi
fi

if [[ -z $src ]]; then
    version=""
    [[ -x $pkgroot/usr/bin/containerd ]] && version=$(version_of "$pkgroot/usr/bin/containerd")
    if at_least_2 "$version"; then
        log "reusing cached containerd $version"
    else
        fetch_unstable
        version=$(version_of "$pkgroot/usr/bin/containerd")
        at_least_2 "$version" ||
            die "Debian unstable's containerd is ${version:-unusable}, not >= 2.0; set CONTAINERD_BIN to a containerd 2.x"
    fi
    src=$pkgroot/usr/bin
fi

layout_bin "$src"
"$bindir/containerd" --version || die "$bindir/containerd does not run"
