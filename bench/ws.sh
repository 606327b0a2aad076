#!/usr/bin/env bash
# WebSocket echo through the gateway vs HAProxy, over HTTP/1.1 (RFC 6455),
# in one run on this machine (loopback only): messages/s, proxy CPU per
# message, and the gateway/HAProxy ratios.
#
#   bash bench/ws.sh                          # 10 s per case
#   SECONDS_PER_CASE=3 REBUILD=0 bash bench/ws.sh
#
# Origin: target/release/examples/wsload serve (tokio-tungstenite echo,
# crates/expressgateway/examples/wsload.rs). Proxies, one at a time, same
# origin: the gateway (worker_threads 2, an `h1` listener; the frame relay
# parses every frame and enforces [listeners.websocket]) and HAProxy
# (nbthread 2, `mode http`, which tunnels the upgraded connection as bytes:
# it does not parse frames). Load: wsload load -c CONNS -m IN_FLIGHT -s SIZE
# for SECONDS_PER_CASE seconds; a message counts once its echo is back.
# CPU: user+system ticks of the proxy process from /proc/<pid>/stat before
# and after the run, divided by the messages echoed (each crosses the proxy
# twice: there and back).
#
# Knobs: SECONDS_PER_CASE (10), CONNS (16), IN_FLIGHT (4), SIZE (128),
# BENCH_BASE_PORT (25500; uses base+1..base+3), REBUILD=0 (skip the
# release builds when both binaries exist).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh

DURATION=${SECONDS_PER_CASE:-10}
CONNS=${CONNS:-16}
IN_FLIGHT=${IN_FLIGHT:-4}
SIZE=${SIZE:-128}
BASE=${BENCH_BASE_PORT:-25500}
ORIGIN_PORT=$((BASE + 1)); GATEWAY_PORT=$((BASE + 2)); HAPROXY_PORT=$((BASE + 3))
TARGET=${CARGO_TARGET_DIR:-target}
GATEWAY_BIN=$TARGET/release/expressgateway
WSLOAD_BIN=$TARGET/release/examples/wsload

need haproxy haproxy


for port in "$ORIGIN_PORT" "$GATEWAY_PORT" "$HAPROXY_PORT"; do tcp_free "$port" BENCH_BASE_PORT; done

if [ "${REBUILD:-1}" != 0 ] || [ ! -x "$GATEWAY_BIN" ] || [ ! -x "$WSLOAD_BIN" ]; then
  cargo build --release -q -p expressgateway --bin expressgateway --example wsload
fi

wait_port() {
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  die "nothing listens on 127.0.0.1:$1 ($2): $(tail -n3 "$WORK/$2.log" 2>/dev/null)"
}

"$WSLOAD_BIN" serve "127.0.0.1:$ORIGIN_PORT" >"$WORK/origin.log" 2>&1 &
PIDS+=($!)
wait_port "$ORIGIN_PORT" origin

cat >"$WORK/gateway.toml" <<EOF
[runtime]
worker_threads = 2
[[listeners]]
address = "127.0.0.1:$GATEWAY_PORT"
protocol = "h1"
[[listeners.backends]]
address = "127.0.0.1:$ORIGIN_PORT"
EOF
RUST_LOG=warn "$GATEWAY_BIN" "$WORK/gateway.toml" >"$WORK/gateway.log" 2>&1 &
GATEWAY_PID=$!
PIDS+=($GATEWAY_PID)
wait_port "$GATEWAY_PORT" gateway

cat >"$WORK/haproxy.cfg" <<EOF
global
  nbthread 2
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  timeout tunnel 60s
frontend ws
  bind 127.0.0.1:$HAPROXY_PORT
  default_backend origin
backend origin
  server o 127.0.0.1:$ORIGIN_PORT
EOF
haproxy -db -f "$WORK/haproxy.cfg" >"$WORK/haproxy.log" 2>&1 &
HAPROXY_PID=$!
PIDS+=($HAPROXY_PID)
wait_port "$HAPROXY_PORT" haproxy

HZ=$(getconf CLK_TCK)
cpu_ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }

# run NAME PORT PID -> "rate us_per_message"
run() {
  local before after out msgs secs rate
  before=$(cpu_ticks "$3")
  out=$("$WSLOAD_BIN" load "ws://127.0.0.1:$2/bench" -c "$CONNS" -m "$IN_FLIGHT" -s "$SIZE" -d "$DURATION" | tail -n1)
  after=$(cpu_ticks "$3")
  msgs=$(echo "$out" | sed -n 's/.*messages=\([0-9]*\).*/\1/p')
  secs=$(echo "$out" | sed -n 's/.*seconds=\([0-9.]*\).*/\1/p')
  [ -n "$msgs" ] && [ "$msgs" -gt 0 ] || die "$1: no messages echoed ($out)"
  rate=$(awk -v m="$msgs" -v s="$secs" 'BEGIN{printf "%.0f", m / s}')
  echo "$rate $(awk -v d=$((after - before)) -v hz="$HZ" -v n="$msgs" 'BEGIN{printf "%.2f", d / hz * 1e6 / n}')"
}

echo "WebSocket echo over HTTP/1.1: $CONNS connections x $IN_FLIGHT in flight, $SIZE-byte binary messages, ${DURATION}s per proxy"
read -r G_RATE G_CPU < <(run gateway "$GATEWAY_PORT" "$GATEWAY_PID")
read -r H_RATE H_CPU < <(run haproxy "$HAPROXY_PORT" "$HAPROXY_PID")
printf "%-14s %14s %22s\n" proxy "messages/s" "proxy CPU us/message"
printf "%-14s %14s %22s\n" expressgateway "$G_RATE" "$G_CPU"
printf "%-14s %14s %22s\n" "haproxy $(haproxy -v | head -n1 | awk '{print $3}')" "$H_RATE" "$H_CPU"
awk -v gr="$G_RATE" -v hr="$H_RATE" -v gc="$G_CPU" -v hc="$H_CPU" \
  'BEGIN{printf "ratio gateway/haproxy: throughput %.2fx, CPU per message %.2fx\n", gr / hr, gc / hc}'
