#!/usr/bin/env bash
# QUIC passthrough (Mode A) vs the same client talking to the QUIC backend
# directly, in one run on this machine (loopback only): requests/s and
# bytes/s under load, and the latency of a single request on an idle
# connection; the difference is what Mode A adds.
#
#   bash bench/passthrough.sh                      # 10 s per case
#   SECONDS_PER_CASE=3 REBUILD=0 bash bench/passthrough.sh
#
# Origin: nginx (1 worker, cleartext HTTP/1.1): `/` answers ~100 bytes,
# `/big` BIG_BYTES. QUIC backend: an ExpressGateway `quic` listener
# (HTTP/3, worker_threads 2) proxying to nginx; it terminates TLS, so it is
# the server the client verifies. Mode A: a second ExpressGateway process
# (worker_threads 2) whose `[passthrough]` routes to that backend.
# Client: target/release/examples/h3load (quinn + h3), CONNS connections x
# STREAMS requests in flight, for SECONDS_PER_CASE; and `--single 200`
# (median of 200 sequential GETs on one idle connection).
# CPU: user+system ticks of the Mode A process from /proc/<pid>/stat per
# completed request.
#
# Goals (issue 12): >= 80 % of direct throughput; < 50 us added at p50.
#
# Knobs: SECONDS_PER_CASE (10), CONNS (8), STREAMS (10), THREADS (2),
# BIG_BYTES (65536), BENCH_BASE_PORT (25500; uses base+1..base+3),
# REBUILD=0 (skip `cargo build --release` when the binaries exist).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh

DURATION=${SECONDS_PER_CASE:-10}
CONNS=${CONNS:-8}
STREAMS=${STREAMS:-10}
THREADS=${THREADS:-2}
BIG=${BIG_BYTES:-65536}
BASE=${BENCH_BASE_PORT:-25500}
ORIGIN_PORT=$((BASE + 1)); BACKEND_QUIC=$((BASE + 2)); MODE_A=$((BASE + 3))
TARGET=${CARGO_TARGET_DIR:-target}
GATEWAY_BIN=$TARGET/release/expressgateway
H3LOAD_BIN=$TARGET/release/examples/h3load

need nginx nginx
need curl curl
need openssl openssl
need python3 python3

tcp_free "$ORIGIN_PORT" BENCH_BASE_PORT
udp_free "$BACKEND_QUIC" BENCH_BASE_PORT
udp_free "$MODE_A" BENCH_BASE_PORT

build_gateway_and_h3load "$GATEWAY_BIN" "$H3LOAD_BIN"
leaf_cert

# --------------------------------------------------------------- origin --
mkdir -p "$WORK/origin/html"
head -c "$BIG" /dev/zero | tr '\0' 'x' >"$WORK/origin/html/big"
start_origin "$ORIGIN_PORT" "    server {
        listen 127.0.0.1:$ORIGIN_PORT;
        location = /big { root $WORK/origin/html; default_type application/octet-stream; }
        location / { default_type text/plain; return 200 \"$ORIGIN_BODY\\n\"; }
    }"

# ------------------------------------------------- backend and Mode A --
cat > "$WORK/backend.toml" <<CFG
[runtime]
worker_threads = 2
max_keepalive_requests = 1000000
max_requests_per_h3_connection = 1000000
[[listeners]]
address = "127.0.0.1:$BACKEND_QUIC"
protocol = "quic"
[listeners.quic]
cert_path = "$WORK/cert.pem"
key_path = "$WORK/key.pem"
retry = "never"
[[listeners.backends]]
address = "127.0.0.1:$ORIGIN_PORT"
protocol = "h1"
CFG
cat > "$WORK/mode_a.toml" <<CFG
[runtime]
worker_threads = 2
[passthrough]
bind_addr = "127.0.0.1:$MODE_A"
backends = ["127.0.0.1:$BACKEND_QUIC"]
CFG
RUST_LOG=warn "$GATEWAY_BIN" "$WORK/backend.toml" >"$WORK/backend.log" 2>&1 &
BACKEND_PID=$!; PIDS+=("$BACKEND_PID")
RUST_LOG=warn "$GATEWAY_BIN" "$WORK/mode_a.toml" >"$WORK/mode_a.log" 2>&1 &
MODE_A_PID=$!; PIDS+=("$MODE_A_PID")

# Both must answer one HTTP/3 request (UDP has no refusal a shell sees).
ready() {
  local port=$1 _
  for _ in $(seq 20); do
    kill -0 "$BACKEND_PID" 2>/dev/null || die "backend gateway exited: $(tail -n1 "$WORK/backend.log")"
    kill -0 "$MODE_A_PID" 2>/dev/null || die "Mode A gateway exited: $(tail -n1 "$WORK/mode_a.log")"
    "$H3LOAD_BIN" "127.0.0.1:$port" --ca "$WORK/cert.pem" --single 1 -n 0 --timeout 1 -t 1 \
      >"$WORK/probe.txt" 2>&1 && return 0
    sleep 0.5
  done
  die "no HTTP/3 answer on 127.0.0.1:$port: $(tail -n1 "$WORK/probe.txt")"
}
ready "$BACKEND_QUIC"
ready "$MODE_A"

# ------------------------------------------------------------ measuring --
HZ=$(getconf CLK_TCK)
cpu_ticks() {
  local v
  v=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | awk '{print $12 + $13}') || v=0
  echo "${v:-0}"
}
result() { awk -v k="$1" '/^RESULT / { for (i = 2; i <= NF; i++) { split($i, a, "="); if (a[1] == k) print a[2] } }' "$2"; }
row() { printf "%-8s %-6s %10s %10s %9s %9s %9s %10s %7s\n" "$@"; }

# run NAME PORT PATH BYTES -> a row; sets RPS and P50 (single request, us)
run() {
  local name=$1 port=$2 path=$3 bytes=$4 f="$WORK/$1${3//\//_}.txt" before after done_n errs mbs cpu
  before=$(cpu_ticks "$MODE_A_PID")
  "$H3LOAD_BIN" "127.0.0.1:$port" --ca "$WORK/cert.pem" --path "$path" --single 200 \
    -c "$CONNS" -m "$STREAMS" -t "$THREADS" -d "$DURATION" >"$f" 2>&1 || true
  after=$(cpu_ticks "$MODE_A_PID")
  done_n=$(result requests "$f"); RPS=$(result rps "$f"); P50=$(result single_p50_us "$f")
  errs=$(( $(result errors "$f" || echo 0) + $(result non_2xx "$f" || echo 0) ))
  if [ -z "$done_n" ] || [ "$done_n" = 0 ]; then
    row "$name" "$path" 0 - - - - - "failed: $(grep -m1 -iE 'error|fatal' "$f" || tail -n1 "$f")"
    RPS=0; P50=0; return
  fi
  mbs=$(awk -v r="$RPS" -v b="$bytes" 'BEGIN{printf "%.1f", r * b / 1e6}')
  cpu="-"
  [ "$name" = mode_a ] && cpu=$(awk -v d=$((after - before)) -v hz="$HZ" -v n="$done_n" 'BEGIN{printf "%.1f", d / hz * 1e6 / n}')
  row "$name" "$path" "$RPS" "$mbs" "$P50" "$(result single_p90_us "$f")" "$(result p50_us "$f")" "$cpu" "$errs"
}

echo "Mode A passthrough vs direct: ${DURATION}s per case, $(nproc) cores, loopback; load ${CONNS} conns x ${STREAMS} streams, ${THREADS} client threads (h3load)"
echo "single = one request at a time on an idle connection (median and p90 of 200); load p50 = latency under load"
echo
row case path req/s MB/s single50 single90 load_p50 cpu_us/req errors
declare -A R L
for path in / /big; do
  bytes=100; [ "$path" = /big ] && bytes=$BIG
  run direct "$BACKEND_QUIC" "$path" "$bytes"; R[direct$path]=$RPS; L[direct$path]=$P50
  run mode_a "$MODE_A" "$path" "$bytes"; R[mode_a$path]=$RPS; L[mode_a$path]=$P50
done
echo
for path in / /big; do
  awk -v p="$path" -v d="${R[direct$path]}" -v m="${R[mode_a$path]}" -v ld="${L[direct$path]}" -v lm="${L[mode_a$path]}" \
    'BEGIN { if (d > 0) printf "%-5s throughput through Mode A: %.0f %% of direct (goal >= 80 %%); added single-request p50: %d us (goal < 50 us)\n", p, 100 * m / d, lm - ld }'
done
