#!/bin/busybox sh
# PID 1 of the `cargo xtask vm` guest (busybox sh), written into the initramfs by vm/initramfs.rs.
#
# Loads the modules listed in /etc/sonde-vm/modules, mounts the host's root (virtiofs tag `hostfs`)
# read-only under a tmpfs-backed overlay at /newroot, mounts the kernel filesystems the agent and
# the tests need inside it, then runs /etc/sonde-vm/cmd.sh chrooted there and powers off.
# Console markers read by vm/console.rs (anywhere in a line; N is this boot's nonce, from
# /etc/sonde-vm/nonce, which the command never sees):
#   SONDE_VM_UP nonce=N krel=<uname -r> uptime=<s> version=<uname -v>
#                                                   the guest is ready; the command starts
#   SONDE_VM_ALIVE nonce=N uptime=<s>               heartbeat, every 10 s while the command runs
#   SONDE_VM_RESULT nonce=N rc=<N>                  the command exited with status N
#   SONDE_VM_SETUP_FAILED nonce=N <step>            the guest could not be set up; no command ran
/bin/busybox --install -s /bin
export PATH=/bin
N=$(cat /etc/sonde-vm/nonce)

fail() {
    echo "SONDE_VM_SETUP_FAILED nonce=$N $*"
    poweroff -f
}
mnt() {
    mount "$@" || fail "mount $*"
}

mnt -t proc proc /proc
mnt -t sysfs sysfs /sys
mnt -t devtmpfs devtmpfs /dev
while read -r ko; do
    insmod "/lib/modules/$ko" || fail "insmod $ko"
done </etc/sonde-vm/modules

# The host root, read-only, under a writable layer in guest RAM: writes never reach the host.
mkdir -p /host /rw /newroot
mnt -t virtiofs -o ro hostfs /host
mnt -t tmpfs -o mode=0755 rw /rw
mkdir -p /rw/upper /rw/work
mnt -t overlay -o lowerdir=/host,upperdir=/rw/upper,workdir=/rw/work overlay /newroot

R=/newroot
mnt -t proc proc $R/proc
mnt -t sysfs sysfs $R/sys
mnt -t devtmpfs devtmpfs $R/dev
mkdir -p $R/dev/pts $R/dev/shm
mnt -t devpts devpts $R/dev/pts
mnt -t tmpfs -o mode=1777 shm $R/dev/shm
mnt -t tracefs tracefs $R/sys/kernel/tracing
mnt -t debugfs debugfs $R/sys/kernel/debug
mnt -t bpf bpf $R/sys/fs/bpf
mnt -t cgroup2 cgroup2 $R/sys/fs/cgroup
# A fresh /run: the host's (sockets, pid files of its daemons) means nothing here. /tmp stays the
# host's, so scripts and files there can be run; writes to it land in the overlay like any other.
mnt -t tmpfs -o mode=0755 run $R/run
mkdir -p $R/run/sonde-vm
cp /etc/sonde-vm/cmd.sh $R/run/sonde-vm/cmd.sh || fail "copy cmd.sh"
ip link set lo up || fail "ip link set lo up"
hostname sonde-vm

# Console log level 5: warnings reach the console, and with them the backtraces of a soft lockup
# or of a sysrq dump (printed at the default level, 4), which `quiet` would hide.
echo 5 >/proc/sys/kernel/printk
# The heartbeat: the host declares the guest hung when it stops (vm/qemu.rs).
(while sleep 10; do echo "SONDE_VM_ALIVE nonce=$N uptime=$(cut -d' ' -f1 /proc/uptime)"; done) &

echo "SONDE_VM_UP nonce=$N krel=$(uname -r) uptime=$(cut -d' ' -f1 /proc/uptime) version=$(uname -v)"
chroot $R /bin/sh /run/sonde-vm/cmd.sh
echo "SONDE_VM_RESULT nonce=$N rc=$?"
poweroff -f
