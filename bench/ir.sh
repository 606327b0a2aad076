#!/usr/bin/env bash
# Instructions per request: the stable signal next to run.sh's wall and CPU
# figures (those move with the machine's load; these do not). The gateway
# runs under `valgrind --tool=callgrind`, one worker; after a warm-up the
# counters are zeroed, N requests are sent, the counters dumped:
# Ir / N is the gateway's cost of one request, kernel excluded.
#
#   bash bench/ir.sh [h1|h2|h3...]        # default: h1 h2 h3
#   REQUESTS=2000 REBUILD=0 bash bench/ir.sh h1
#   KEEP_WORK=1 ...                       # keep callgrind.out.* for
#                                         # callgrind_annotate
# Knobs as run.sh's (GATEWAY_BIN, H3LOAD_BIN, BENCH_BASE_PORT, REBUILD).
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -gt 0 ] || set -- h1 h2 h3
TARGET=${CARGO_TARGET_DIR:-target}
GATEWAY=${GATEWAY_BIN:-$TARGET/release/expressgateway}
export H3LOAD_BIN=${H3LOAD_BIN:-$TARGET/release/examples/h3load}
N=${REQUESTS:-2000}
if [ "${REBUILD:-1}" != 0 ]; then
  cargo build --release -q -p expressgateway --bin expressgateway --example h3load
fi
. bench/lib.sh; . bench/measure.sh; . bench/peers.sh
need valgrind valgrind
need h2load nghttp2-client
PROXY_WORKERS=1
PATH_BASE=${BENCH_BASE_PORT:-25500}

# The gateway under callgrind, counting from the first zeroing on.
GATEWAY_BIN="$WORK/under-callgrind"
cat >"$GATEWAY_BIN" <<SH
#!/bin/sh
exec valgrind --tool=callgrind --callgrind-out-file=$WORK/callgrind.out.%p \
  --collect-atstart=yes --compress-strings=no --compress-pos=no "$GATEWAY" "\$@"
SH
chmod +x "$GATEWAY_BIN"

ORIGIN_PORT=$((PATH_BASE + 1)); H1=$((PATH_BASE + 2)); TLS=$((PATH_BASE + 3)); QUIC=$((PATH_BASE + 4))
tcp_free "$ORIGIN_PORT" BENCH_BASE_PORT; tcp_free "$H1" BENCH_BASE_PORT; tcp_free "$TLS" BENCH_BASE_PORT
leaf_cert
bench_origin "$ORIGIN_PORT"
{ gateway_runtime
  gateway_listener h1 "$H1" "$ORIGIN_PORT" h1
  gateway_listener h1s "$TLS" "$ORIGIN_PORT" h1
  gateway_listener quic "$QUIC" "$ORIGIN_PORT" h1
} >"$WORK/gateway.toml"
RUST_LOG=warn "$GATEWAY_BIN" "$WORK/gateway.toml" >"$WORK/gateway.log" 2>&1 &
GW=$!; PIDS+=("$GW")
for _ in $(seq 120); do
  curl -s -o /dev/null "http://127.0.0.1:$H1/" && break
  kill -0 "$GW" 2>/dev/null || die "gateway exited: $(tail -n3 "$WORK/gateway.log")"
  sleep 0.5
done

# load PATH COUNT: COUNT requests on PATH's client.
load() {
  case $1 in
    h1) h2load --h1 -t1 -c8 -n "$2" "http://127.0.0.1:$H1/" ;;
    h2) h2load -t1 -c8 -m8 -n "$2" "https://127.0.0.1:$TLS/" ;;
    h3) "$H3LOAD_BIN" "127.0.0.1:$QUIC" --ca "$WORK/cert.pem" -t1 -c8 -m10 -n "$2" ;;
  esac >"$WORK/load.txt" 2>&1 || die "$1 load failed: $(tail -n3 "$WORK/load.txt")"
}
for p in "$@"; do
  load "$p" $((N / 4))
  callgrind_control -z "$GW" >/dev/null
  load "$p" "$N"
  callgrind_control -d "$p" "$GW" >/dev/null
  sleep 1
  out=$(ls -t "$WORK/callgrind.out.$GW".* | head -n1)
  ir=$(callgrind_annotate "$out" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1; exit }')
  printf '%s  %s requests  %d Ir/request  (%s)\n' "$p" "$N" $((ir / N)) "$(basename "$out")"
done
