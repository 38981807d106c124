#!/usr/bin/env bash
# Run a command inside a small VM whose only cgroup hierarchy is v2, with every controller:
# the suite's way to prove on a cgroup v1 host what holds on v2. The VM boots the system
# suite's kernel (downloaded, unpacked, not installed) under qemu with KVM; it sees the host's
# root read-only, this project read-write at the same path, a fresh ext4 disk on /tmp, every
# module of the kernel's package loaded on demand and nothing of the host's network. The
# command runs in the project directory as root, with the SANDBOXCLIENT_*, CONTAINERD_BIN,
# PYTEST_ADDOPTS and CI variables of the caller; the script exits with its status.
# Usage: scripts/vm-run.sh COMMAND [ARG...]   (root only; needs /dev/kvm)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
project=$PWD
cache=$project/.cache/vm

log() { echo "vm-run: $*" >&2; }
die() {
    log "error: $*"
    exit 1
}
(($#)) || die "usage: vm-run.sh COMMAND [ARG...]"
[[ $(id -u) == 0 ]] || die "run as root"
[[ -x $project/.venv/bin/python ]] || die "no $project/.venv: run make install first"

bash scripts/apt-install.sh vm-run qemu-system-x86 busybox-static e2fsprogs

kernel_package() {
    apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-/ {print $2; exit}'
}
package=$(kernel_package)
if [[ -z $package ]]; then
    apt-get -q update >&2 || die "apt-get update failed"
    package=$(kernel_package)
fi
[[ -n $package ]] || die "no kernel package for linux-image-amd64"
# Unpacked once per kernel package and scripts (a changed script makes a new initramfs).
kernel=$cache/$package-$(cat scripts/vm/init.sh scripts/vm-run.sh | sha256sum | cut -c1-12)
if [[ ! -f $kernel/initrd.gz ]]; then
    log "unpacking $package"
    rm -rf "$cache/$package"-* "$cache/unpack"
    mkdir -p "$cache/unpack/initrd"
    (cd "$cache/unpack" && apt-get -q download "$package" 2>/dev/null) || die "cannot download $package"
    dpkg-deb -x "$cache"/unpack/*.deb "$cache/unpack/root"
    modules=$(echo "$cache"/unpack/root/lib/modules/*)
    initrd=$cache/unpack/initrd
    mkdir -p "$initrd"/{bin,dev,proc,sys,newroot,modules}
    cp /usr/bin/busybox "$initrd/bin/busybox"
    cp scripts/vm/init.sh "$initrd/init"
    chmod 755 "$initrd/init"
    # The modules to mount the shares, the disk and the snapshotter's overlays, each after
    # what it depends on.
    declare -A done_=()
    load() {
        local name=$1 file dep
        [[ -n ${done_[$name]:-} ]] && return 0
        file=$(find "$modules/kernel" -name "$name.ko" -o -name "${name//_/-}.ko" | head -n 1)
        [[ -n $file ]] || die "module $name not found in $package"
        for dep in $(tr '\0' '\n' <"$file" | sed -n 's/^depends=//p' | tr ',' ' '); do
            load "$dep"
        done
        cp "$file" "$initrd/modules/"
        basename "$file" >>"$initrd/modules/order"
        done_[$name]=1
    }
    for m in virtio_pci virtio_blk crc32c_generic ext4 9pnet_virtio 9p overlay; do
        load "$m"
    done
    mkdir -p "$kernel"
    # Every other module, for the kernel to load when a test needs it (a bridge, a veth,
    # netfilter's tables and matches for the sandboxes' networks): busybox's modprobe in a
    # root of its own holding them, which init.sh makes the kernel's module loader.
    loader=$kernel/modules
    mkdir -p "$loader/root/bin" "$loader/root/proc" "$loader/root/lib/modules"
    cp /usr/bin/busybox "$loader/root/bin/busybox"
    mv "$modules" "$loader/root/lib/modules/"
    busybox depmod -b "$loader/root" "$(basename "$modules")"
    printf '%s\n' '#!/bin/sh' 'exec /usr/sbin/chroot "${0%/*}/root" /bin/busybox modprobe "$@"' \
        >"$loader/modprobe"
    chmod 755 "$loader/modprobe"
    (cd "$initrd" && find . | busybox cpio -o -H newc 2>/dev/null | gzip -1 >"$kernel/initrd.gz")
    cp "$cache"/unpack/root/boot/vmlinuz-* "$kernel/vmlinuz"
    rm -rf "$cache/unpack"
fi

run=$cache/run
rm -rf "$run"
mkdir -p "$run"
env | grep -E '^(SANDBOXCLIENT_[A-Z0-9_]*|CONTAINERD_BIN|PYTEST_ADDOPTS|CI)=' >"$run/env" || true
printf '%q ' "$@" >"$run/command"
echo >>"$run/command"
truncate -s 16G "$run/scratch.img"
mkfs.ext4 -q -F "$run/scratch.img"

log "booting $package (cgroup v2 only) for: $*"
timeout --foreground 1500 qemu-system-x86_64 \
    -accel "${VM_ACCEL:-tcg,thread=multi}" -cpu max -smp "$(nproc)" -m 4096 \
    -nodefaults -no-reboot -display none -serial stdio \
    -kernel "$kernel/vmlinuz" -initrd "$kernel/initrd.gz" \
    -append "console=ttyS0 quiet panic=-1 sbx.project=$project sbx.modules=$kernel/modules" \
    -virtfs local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap \
    -virtfs "local,path=$project,mount_tag=project,security_model=none,multidevs=remap" \
    -drive "file=$run/scratch.img,format=raw,if=virtio,cache=unsafe" </dev/null ||
    log "qemu ended with status $?"
rm -f "$run/scratch.img"
[[ -f $run/status ]] || die "the VM ended without the command's status"
exit "$(cat "$run/status")"
