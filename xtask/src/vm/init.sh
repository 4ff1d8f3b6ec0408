#!/bin/busybox sh
# PID 1 of the `cargo xtask vm` guest (busybox sh), written into the initramfs by vm/initramfs.rs.
#
# Loads the modules listed in /etc/sonde-vm/modules, mounts the host's root (virtiofs tag `hostfs`)
# read-only under a tmpfs-backed overlay at /newroot, mounts the kernel filesystems the agent and
# the tests need inside it, then runs /etc/sonde-vm/cmd.sh chrooted there and powers off.
# Console markers read by vm/qemu.rs (each alone on its line):
#   SONDE_VM_UP krel=<uname -r> uptime=<seconds>   the guest is ready; the command starts
#   SONDE_VM_RESULT rc=<N>                          the command exited with status N
#   SONDE_VM_SETUP_FAILED <step>                    the guest could not be set up; no command ran
/bin/busybox --install -s /bin
export PATH=/bin

fail() {
    echo "SONDE_VM_SETUP_FAILED $*"
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

echo "SONDE_VM_UP krel=$(uname -r) uptime=$(cut -d' ' -f1 /proc/uptime)"
chroot $R /bin/sh /run/sonde-vm/cmd.sh
echo "SONDE_VM_RESULT rc=$?"
poweroff -f
