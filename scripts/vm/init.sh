#!/bin/busybox sh
# The first process of the test VM's initramfs: mount the host's root read-only and the
# project read-write over 9p, a fresh ext4 disk on /tmp, cgroup v2 alone on /sys/fs/cgroup,
# the kernel's module loader pointed at the kernel package's modules, then hand over to the
# project's guest script. Kernel arguments: sbx.project=DIR, sbx.modules=DIR.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
while read -r m; do insmod "/modules/$m" || echo "vm-init: insmod $m failed"; done </modules/order
project= modules=
for arg in $(cat /proc/cmdline); do
    case $arg in
    sbx.project=*) project=${arg#sbx.project=} ;;
    sbx.modules=*) modules=${arg#sbx.modules=} ;;
    esac
done
fail() {
    echo "vm-init: $*"
    echo o >/proc/sysrq-trigger
    sleep 60
}
[ -n "$project" ] || fail "no sbx.project= argument"
mkdir -p /newroot
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000,cache=loose hostroot /newroot ||
    fail "cannot mount the host's root"
mount -t ext4 /dev/vda /newroot/tmp || fail "cannot mount the scratch disk"
chmod 1777 /newroot/tmp
# After /tmp: a project below it (a clone in /tmp) is mounted over the scratch disk. Cached as
# the host's root is: the host leaves it alone while the VM runs, and every import of the
# tests (the venv is in the project) would otherwise cross to the host, emulated, each time.
# What the guest writes there reaches the host by the sync before power-off (guest.py).
mkdir -p "/newroot$project"
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,cache=loose project "/newroot$project" ||
    fail "cannot mount the project"
# The modules loaded on demand (vm-run.sh unpacked them in the project's cache): the kernel
# runs busybox's modprobe chrooted where they are, with a /proc to see those loaded.
if [ -n "$modules" ]; then
    mount -t proc proc "/newroot$modules/root/proc" || fail "cannot mount /proc for modprobe"
    echo "$modules/modprobe" >/proc/sys/kernel/modprobe
fi
mount --move /proc /newroot/proc
mount --move /sys /newroot/sys
mount --move /dev /newroot/dev
mount -t cgroup2 -o nsdelegate cgroup2 /newroot/sys/fs/cgroup || fail "cannot mount cgroup2"
mount -t tmpfs -o mode=755 tmpfs /newroot/run
# CNI's plugins keep their state (host-local's leases) there: writable, and the VM's own.
if [ -d /newroot/var/lib/cni ]; then
    mount -t tmpfs -o mode=755 tmpfs /newroot/var/lib/cni || fail "cannot mount /var/lib/cni"
else
    echo "vm-init: the host has no /var/lib/cni: CNI's host-local cannot keep leases here"
fi
mkdir -p /newroot/dev/pts /newroot/dev/shm
mount -t devpts -o newinstance,ptmxmode=0666 devpts /newroot/dev/pts
mount -t tmpfs -o mode=1777 tmpfs /newroot/dev/shm
exec switch_root /newroot "$project/.venv/bin/python" "$project/scripts/vm/guest.py" "$project"
