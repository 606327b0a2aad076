#!/usr/bin/env bash
# L4 throughput and CPU: backend direct vs HAProxy `mode tcp` vs the
# gateway's `tcp` listener, in one run on this machine (loopback only).
#
#   bash bench/l4.sh            # 10 s per case, 4 parallel streams
#   SECONDS_PER_CASE=5 STREAMS=1 bash bench/l4.sh
#
# Load: iperf3 (client and server). CPU: the proxy process's user+system
# time over the run, from /proc/<pid>/stat. Prints Gbit/s, proxy CPU
# seconds per GiB moved, and the gateway/HAProxy ratios.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh

DURATION=${SECONDS_PER_CASE:-10}
STREAMS=${STREAMS:-4}
BASE=${BENCH_BASE_PORT:-25200}
BACKEND_PORT=$((BASE + 1)); HAPROXY_PORT=$((BASE + 2)); GATEWAY_PORT=$((BASE + 3))

need iperf3 iperf3
need haproxy haproxy
BIN=${CARGO_TARGET_DIR:-target}/release/expressgateway
[ -x "$BIN" ] && [ "${REBUILD:-1}" = 0 ] || cargo build --release -q


iperf3 -s -p "$BACKEND_PORT" -D --pidfile "$WORK/iperf.pid" >/dev/null
sleep 0.3; PIDS+=("$(cat "$WORK/iperf.pid")")

cat > "$WORK/haproxy.cfg" <<CFG
global
    # 4096: within this sandbox's fd limit (20000); far above the bench's needs.
    maxconn 4096
    nbthread 2
defaults
    mode tcp
    # Kernel splicing: HAProxy's fastest TCP relay, so the baseline is its best.
    option splice-auto
    timeout connect 5s
    timeout client 1h
    timeout server 1h
frontend fe
    bind 127.0.0.1:$HAPROXY_PORT
    default_backend be
backend be
    server s1 127.0.0.1:$BACKEND_PORT
CFG
haproxy -f "$WORK/haproxy.cfg" -db >/dev/null 2>&1 &
PIDS+=($!); HAPROXY_PID=$!

cat > "$WORK/gateway.toml" <<CFG
[runtime]
worker_threads = 2
[[listeners]]
address = "127.0.0.1:$GATEWAY_PORT"
protocol = "tcp"
[[listeners.backends]]
address = "127.0.0.1:$BACKEND_PORT"
CFG
RUST_LOG=warn "$BIN" "$WORK/gateway.toml" >/dev/null &
PIDS+=($!); GATEWAY_PID=$!
sleep 1

cpu_ticks() { # utime + stime of a pid, in clock ticks
  [ -n "$1" ] || { echo 0; return; }
  awk '{print $14 + $15}' "/proc/$1/stat"
}
HZ=$(getconf CLK_TCK)

# run NAME PORT PID(or empty) REVERSE(-R or empty) -> prints a row, sets GBPS/CPU_PER_GIB
run() {
  local name=$1 port=$2 pid=$3 dir=$4
  local before after bytes secs
  before=$(cpu_ticks "$pid")
  iperf3 -c 127.0.0.1 -p "$port" -t "$DURATION" -P "$STREAMS" $dir -J > "$WORK/out.json"
  after=$(cpu_ticks "$pid")
  bytes=$(python3 -c "import json;d=json.load(open('$WORK/out.json'));print(int(d['end']['sum_received']['bytes']))")
  secs=$(python3 -c "import json;d=json.load(open('$WORK/out.json'));print(d['end']['sum_received']['seconds'])")
  GBPS=$(python3 -c "print(f'{$bytes*8/$secs/1e9:.2f}')")
  CPU_PER_GIB=$(python3 -c "print(f'{($after-$before)/$HZ/($bytes/2**30):.4f}')")
  printf "%-10s %-8s %10s Gbit/s %12s cpu-s/GiB\n" "$name" "${dir:-up}" "$GBPS" "$CPU_PER_GIB"
}

echo "L4 relay benchmark: ${DURATION}s per case, ${STREAMS} streams, $(nproc) cores"
for dir in "" "-R"; do
  run direct "$BACKEND_PORT" "" "$dir"
  run haproxy "$HAPROXY_PORT" "$HAPROXY_PID" "$dir"; H_G=$GBPS; H_C=$CPU_PER_GIB
  run gateway "$GATEWAY_PORT" "$GATEWAY_PID" "$dir"; G_G=$GBPS; G_C=$CPU_PER_GIB
  python3 -c "print(f'ratio gateway/haproxy ({\"$dir\" or \"up\"}): throughput {$G_G/$H_G:.2f}x, cpu per GiB {$G_C/$H_C:.2f}x')"
done
