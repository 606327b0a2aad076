#!/usr/bin/env bash
# gRPC unary calls/s and CPU per call: the gateway (`h1s`, HTTP/2 by ALPN,
# to an h2c backend) vs HAProxy (TLS alpn h2, `proto h2` to the backend),
# in front of the same grpcio origin, in one run on this machine (loopback).
#
#   bash bench/grpc.sh                      # 10 s per case
#   SECONDS_PER_CASE=5 REBUILD=0 bash bench/grpc.sh
#
# Origin: tests/e2e/py/grpc_peer.py server (grpcio, 16 threads): its
# /test.Echo/Unary echoes the request. A Python origin caps calls/s for
# every proxy alike; the proxy CPU per call is the figure to compare.
# Load: h2load -c16 -m10 -t2, POST of a prebuilt gRPC frame ("hello"),
# content-type application/grpc, te: trailers; also the origin directly
# (h2c) as a baseline.
# CPU: user+system ticks of the proxy process from /proc/<pid>/stat,
# before and after each run, divided by the calls completed.
#
# Knobs: SECONDS_PER_CASE (10), BENCH_BASE_PORT (25400; uses base+1..+2),
# REBUILD=0 (skip `cargo build --release` when the binary exists),
# GATEWAY_BIN (default $CARGO_TARGET_DIR/release/expressgateway or
# target/release/expressgateway).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh

DURATION=${SECONDS_PER_CASE:-10}
BASE=${BENCH_BASE_PORT:-25400}
HAPROXY_TLS=$((BASE + 1)); GATEWAY_TLS=$((BASE + 2))
GATEWAY_BIN=${GATEWAY_BIN:-${CARGO_TARGET_DIR:-target}/release/expressgateway}

need haproxy haproxy
need h2load nghttp2-client
need openssl openssl
python3 -c 'import grpc, grpc_health.v1.health' 2>/dev/null \
  || PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install -q grpcio grpcio-health-checking


for port in $HAPROXY_TLS $GATEWAY_TLS; do tcp_free "$port" BENCH_BASE_PORT; done

leaf_cert
cat "$WORK/cert.pem" "$WORK/key.pem" > "$WORK/haproxy.pem"
chmod 600 "$WORK/haproxy.pem"
# One gRPC message frame: uncompressed, length 5, "hello".
printf '\x00\x00\x00\x00\x05hello' > "$WORK/call.bin"

# -------------------------------------------------------------- origin --
mkfifo "$WORK/origin.in"
sleep $((DURATION * 4 + 120)) > "$WORK/origin.in" &
PIDS+=($!)
python3 crates/expressgateway/tests/e2e/py/grpc_peer.py server --lifetime $((DURATION * 4 + 100)) \
  < "$WORK/origin.in" > "$WORK/origin.out" 2>"$WORK/origin.log" &
ORIGIN_PID=$!; PIDS+=("$ORIGIN_PID")
for _ in $(seq 100); do grep -q port "$WORK/origin.out" 2>/dev/null && break; sleep 0.1; done
ORIGIN_PORT=$(sed -n 's/.*"port": \([0-9]*\).*/\1/p' "$WORK/origin.out")
[ -n "$ORIGIN_PORT" ] || { cat "$WORK/origin.log" >&2; die "grpcio origin did not start"; }

# -------------------------------------------------------------- haproxy --
cat > "$WORK/haproxy.cfg" <<CFG
global
    maxconn 8192
    nbthread 2
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend fe
    bind 127.0.0.1:$HAPROXY_TLS ssl crt $WORK/haproxy.pem alpn h2
    default_backend be
backend be
    server s1 127.0.0.1:$ORIGIN_PORT proto h2
CFG
haproxy -f "$WORK/haproxy.cfg" -db >"$WORK/haproxy.log" 2>&1 &
HAPROXY_PID=$!; PIDS+=("$HAPROXY_PID")

# -------------------------------------------------------------- gateway --
if [ -x "$GATEWAY_BIN" ] && [ "${REBUILD:-1}" = 0 ]; then :
else cargo build --release -q -p expressgateway || die "cargo build --release failed"; fi
cat > "$WORK/gateway.toml" <<CFG
[runtime]
worker_threads = 2
[[listeners]]
name = "bench-grpc"
address = "127.0.0.1:$GATEWAY_TLS"
protocol = "h1s"
[listeners.tls]
cert_path = "$WORK/cert.pem"
key_path = "$WORK/key.pem"
# h2load does not reconnect after the graceful GOAWAY that recycles a
# connection (default every 1000 requests): unlimited, as HAProxy is.
[listeners.h2_security]
max_requests_per_connection = 0
[[listeners.backends]]
address = "127.0.0.1:$ORIGIN_PORT"
protocol = "h2"
CFG
RUST_LOG=warn "$GATEWAY_BIN" "$WORK/gateway.toml" >"$WORK/gateway.log" 2>&1 &
GATEWAY_PID=$!; PIDS+=("$GATEWAY_PID")
sleep 1
kill -0 "$GATEWAY_PID" 2>/dev/null || { cat "$WORK/gateway.log" >&2; die "gateway did not start"; }
kill -0 "$HAPROXY_PID" 2>/dev/null || { cat "$WORK/haproxy.log" >&2; die "haproxy did not start"; }

# ------------------------------------------------------------ measuring --
HZ=$(getconf CLK_TCK)
cpu_ticks() { sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | awk '{print $12 + $13}'; }
row() { printf "%-8s %10s  %-24s %12s  %s\n" "$@"; }
declare -A CPU RPS

# run NAME URL PID
run() {
  local name=$1 url=$2 pid=$3 before after out done_n rps lat errs
  before=$(cpu_ticks "$pid")
  out=$(h2load -D "$DURATION" -c 16 -m 10 -t 2 -d "$WORK/call.bin" \
    -H 'content-type: application/grpc' -H 'te: trailers' "$url" 2>&1) || true
  after=$(cpu_ticks "$pid")
  echo "$out" > "$WORK/h2load-$name.txt"
  done_n=$(awk '/^requests:/ {print $8; exit}' <<<"$out")
  rps=$(awk '/^finished in/ {printf "%.0f", $4}' <<<"$out")
  lat=$(awk '/^time for request:/ {print $6; exit}' <<<"$out")
  errs=$(awk '/^requests:/ {n += $10} /^status codes:/ {n += $5 + $7 + $9} END {print n + 0}' <<<"$out")
  if [ -z "$done_n" ] || [ "$done_n" = 0 ]; then
    row "$name" 0 - - "h2load failed: $(tail -n1 <<<"$out")"; return
  fi
  CPU[$name]=$(awk -v d=$((after - before)) -v hz="$HZ" -v n="$done_n" 'BEGIN{printf "%.1f", d / hz * 1e6 / n}')
  RPS[$name]=$rps
  row "$name" "$rps" "mean $lat" "${CPU[$name]}" "$errs"
  [ "$errs" = 0 ] || grep -E '^(requests|status codes):' <<<"$out" | sed 's/^/         /'
}

echo "gRPC unary benchmark: ${DURATION}s per case, $(nproc) cores, loopback, grpcio origin (Python)"
echo "load: h2load -c16 -m10 -t2, one 10-byte gRPC frame per call; proxies over TLS (ALPN h2), h2c to the origin"
echo "cpu: user+system of the proxy process (origin: the Python server) per completed call"
echo
row proxy calls/s latency "cpu us/call" errors
run origin "http://127.0.0.1:$ORIGIN_PORT/test.Echo/Unary" "$ORIGIN_PID"
run haproxy "https://127.0.0.1:$HAPROXY_TLS/test.Echo/Unary" "$HAPROXY_PID"
run gateway "https://127.0.0.1:$GATEWAY_TLS/test.Echo/Unary" "$GATEWAY_PID"
if [ -n "${RPS[gateway]:-}" ] && [ -n "${RPS[haproxy]:-}" ]; then
  echo
  awk -v g="${RPS[gateway]}" -v h="${RPS[haproxy]}" -v gc="${CPU[gateway]}" -v hc="${CPU[haproxy]}" \
    'BEGIN { printf "gateway/haproxy: calls/s %.2f, cpu per call %.2f\n", g / h, gc / hc }'
fi
