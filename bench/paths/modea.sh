# Path modea: QUIC passthrough (Mode A) vs the same client straight to the
# QUIC backend (sourced by run.sh). Origin: nginx (`/` ~100 bytes, `/big`
# BIG_BYTES). QUIC backend: a gateway `quic` listener (HTTP/3 -> the origin;
# it terminates TLS, so it is the server the client verifies), on LOAD_CPUS
# with the origin and h3load. Mode A: a second gateway whose `[passthrough]`
# routes to that backend, pinned to PROXY_CPUS; its CPU is the one counted.
# Load: examples/h3load -t1 -c CONNS -m STREAMS on `/` and `/big`; case
# single: 200 sequential GETs on one idle connection (p50 = median, p99
# column = p90). No peer: none in Debian relays QUIC by connection ID.
need nginx nginx
[ -x "$H3LOAD_BIN" ] || die "$H3LOAD_BIN missing (REBUILD=0 with no build?)"
H3_SHAPE=(-t1 -c "${CONNS:-8}" -m "${STREAMS:-10}")
BIG=${BIG_BYTES:-65536}
ORIGIN_PORT=$((PATH_BASE + 1)); BACKEND_QUIC=$((PATH_BASE + 2)); MODE_A=$((PATH_BASE + 3))
tcp_free "$ORIGIN_PORT" BENCH_BASE_PORT
udp_free "$BACKEND_QUIC" BENCH_BASE_PORT
udp_free "$MODE_A" BENCH_BASE_PORT
leaf_cert
mkdir -p "$WORK/origin/html"
head -c "$BIG" /dev/zero | tr '\0' 'x' >"$WORK/origin/html/big"
bench_origin "$ORIGIN_PORT" "        location = /big { root $WORK/origin/html; default_type application/octet-stream; }"
UPSTREAM=none

{ gateway_runtime
  gateway_listener quic "$BACKEND_QUIC" "$ORIGIN_PORT" h1 'retry = "never"'
} >"$WORK/backend.toml"
{
  gateway_runtime
  cat <<CFG
[passthrough]
bind_addr = "127.0.0.1:$MODE_A"
backends = ["127.0.0.1:$BACKEND_QUIC"]
CFG
} >"$WORK/gateway.toml"
RUST_LOG=warn on_load "$GATEWAY_BIN" "$WORK/backend.toml" >"$WORK/backend.log" 2>&1 &
BACKEND_PID=$!; PIDS+=("$BACKEND_PID")
start_gateway gateway
PID_gateway=$LAST_PID
ready_h3 "127.0.0.1:$BACKEND_QUIC" "$BACKEND_PID" "$WORK/backend.log" "backend gateway"
ready_h3 "127.0.0.1:$MODE_A" "$PID_gateway" "$WORK/gateway.log" "Mode A gateway"

# single PROXY PORT: the idle-connection latency (h3load --single 200).
single() {
  local f="$WORK/single-$1.txt"
  on_load "$H3LOAD_BIN" "127.0.0.1:$2" --ca "$WORK/cert.pem" --single 200 -n 0 -t 1 >"$f" 2>&1 || true
  local p50
  p50=$(h3result single_p50_us "$f")
  [ -n "$p50" ] || { failed single "$1" "h3load: $(tail -n1 "$f")"; return; }
  RSS_MIB="-"; UP="-"; REUSE="-"
  record single "$1" - - "$(to_ms "${p50}us")" "$(to_ms "$(h3result single_p90_us "$f")us")" - - 0
}
single direct "$BACKEND_QUIC"
single gateway "$MODE_A"
for path in / /big; do
  h3load_case "$path" direct "" "127.0.0.1:$BACKEND_QUIC" --path "$path" "${H3_SHAPE[@]}"
  h3load_case "$path" gateway "$PID_gateway" "127.0.0.1:$MODE_A" --path "$path" "${H3_SHAPE[@]}"
done
