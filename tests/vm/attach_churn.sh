#!/bin/sh
# Attach/detach churn: starts and stops the agent ROUNDS times while other processes make syscalls
# and loopback HTTP requests, so the kernel patches its code (the syscall tracepoints' static keys,
# the fentry trampolines or kprobes) on one CPU while the other CPU runs through that code. It
# reproduces, under multi-threaded TCG, the guest livelock described in the README's kernel
# section; with `--tcg-thread single` (the default) it must finish every round.
#
#   cargo xtask vm [--kernel bookworm] [--tcg-thread multi] -- sh tests/vm/attach_churn.sh [ROUNDS] [CAPTURE]
#
# Run from the repository root, after `cargo xtask build --release` (or set SONDE_BIN). Exits 0
# when every round attached, saw traffic and detached; prints one line per round.
set -u
rounds=${1:-20}
capture=${2:-fentry}
sonde=${SONDE_BIN:-target/release/sonde}
bb=/bin/busybox
port=18080
dir=$(mktemp -d /tmp/attach-churn.XXXXXX)
echo hello >"$dir/index.html"

uptime_s() { cut -d' ' -f1 /proc/uptime; }

$bb httpd -f -p "127.0.0.1:$port" -h "$dir" &
httpd=$!
# Traffic and syscalls on both CPUs for as long as the rounds run.
(while :; do $bb wget -q -O /dev/null "http://127.0.0.1:$port/index.html"; done) &
load1=$!
(while :; do cat /proc/uptime /proc/loadavg >/dev/null; done) &
load2=$!
trap 'kill $httpd $load1 $load2 2>/dev/null' EXIT

i=0
while [ "$i" -lt "$rounds" ]; do
    i=$((i + 1))
    t0=$(uptime_s)
    "$sonde" --capture "$capture" --port "$port" --stats-interval-secs 0 \
        >"$dir/spans.txt" 2>"$dir/sonde.log" &
    pid=$!
    until grep -q "capture ready" "$dir/sonde.log"; do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "attach_churn: round $i: the agent exited before it was ready"
            cat "$dir/sonde.log"
            exit 1
        fi
        sleep 0.2
    done
    sleep 1
    kill -INT "$pid"
    wait "$pid"
    rc=$?
    spans=$(grep -c "GET /index.html" "$dir/spans.txt")
    echo "attach_churn: round $i/$rounds: exit $rc, $spans spans, $(awk -v a="$t0" -v b="$(uptime_s)" 'BEGIN { printf "%.1f", b - a }') s"
    [ "$rc" -eq 0 ] || exit 1
done
echo "attach_churn: $rounds rounds of attach, trace and detach in capture $capture"
