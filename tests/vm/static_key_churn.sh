#!/bin/sh
# Kernel code patching with no eBPF and no Sonde at all: turns one syscall tracepoint on and off
# through tracefs TOGGLES times (each flip patches the `sys_enter` static branch in every syscall's
# entry path with text_poke_bp) while other processes make syscalls on the other CPUs. Under
# multi-threaded TCG this reproduces the guest livelock of the README's kernel section; with
# `--tcg-thread single` (the default) it must finish.
#
#   cargo xtask vm [--kernel bookworm] [--tcg-thread multi] -- sh tests/vm/static_key_churn.sh [TOGGLES]
set -u
toggles=${1:-20000}
enable=/sys/kernel/tracing/events/syscalls/sys_enter_statx/enable
[ -w "$enable" ] || { echo "static_key_churn: $enable is not writable"; exit 1; }
# Syscalls on every CPU while the code under them changes.
(while :; do stat / >/dev/null; done) &
load1=$!
(while :; do cat /proc/uptime >/dev/null; done) &
load2=$!
trap 'kill $load1 $load2 2>/dev/null; echo 0 >"$enable"' EXIT
i=0
while [ "$i" -lt "$toggles" ]; do
    echo 1 >"$enable"
    echo 0 >"$enable"
    i=$((i + 1))
    [ $((i % 1000)) -eq 0 ] && echo "static_key_churn: $i/$toggles toggles, uptime $(cut -d' ' -f1 /proc/uptime) s"
done
echo "static_key_churn: $toggles toggles of sys_enter_statx"
