#!/usr/bin/env bash
# HTTP/3 vs HTTP/2 through the gateway: requests/s, latency and gateway CPU
# per request, in one run on this machine (loopback only), plus the latency
# of a single HTTP/3 request on an idle connection.
#
#   bash bench/h3.sh                        # 10 s per case
#   SECONDS_PER_CASE=2 REBUILD=0 bash bench/h3.sh
#
# Origin: one nginx (1 worker, `return 200`, ~100-byte body, keep-alive,
# cleartext HTTP/1.1). Gateway (worker_threads 2): an `h1s` listener (TLS,
# ALPN h2) and a `quic` listener (HTTP/3), both proxying to the origin.
# Load, same shape for both: CONNS connections x STREAMS requests in flight
# each, THREADS client threads, SECONDS_PER_CASE seconds:
#   H2: h2load -c CONNS -m STREAMS -t THREADS over TLS
#   H3: target/release/examples/h3load (crates/expressgateway/examples/
#       h3load.rs, quinn + h3) -c CONNS -m STREAMS -t THREADS
# Single request: h3load --single 50 (5 warm-up requests, then the median of
# 50 sequential GETs on one otherwise idle connection, gateway idle); the
# same for H2 with h2load -c1 -m1 (it reports only the mean).
# CPU: user+system ticks of the gateway process from /proc/<pid>/stat before
# and after each load run, divided by the responses completed; the load
# client's own CPU (from `times`) is shown for context: both share the cores.
#
# Goals (from the issue): H3 gateway CPU per request <= 1.5x H2; a single
# H3 request on loopback under 1 ms.
#
# Knobs: SECONDS_PER_CASE (10), CONNS (8), STREAMS (10), THREADS (2),
# BENCH_BASE_PORT (25400; uses base+1..base+3), REBUILD=0 (skip
# `cargo build --release` of the gateway and h3load when both exist).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh

DURATION=${SECONDS_PER_CASE:-10}
CONNS=${CONNS:-8}
STREAMS=${STREAMS:-10}
THREADS=${THREADS:-2}
BASE=${BENCH_BASE_PORT:-25400}
ORIGIN_PORT=$((BASE + 1)); GATEWAY_TLS=$((BASE + 2)); GATEWAY_QUIC=$((BASE + 3))
GATEWAY_BIN=target/release/expressgateway
H3LOAD_BIN=target/release/examples/h3load

need nginx nginx
need h2load nghttp2-client
need curl curl
need openssl openssl
need python3 python3



# Refuse to start if a port is taken (TCP for the origin and h1s, UDP for
# quic): a stranger answering there would be benchmarked instead.
for port in "$ORIGIN_PORT" "$GATEWAY_TLS"; do tcp_free "$port" BENCH_BASE_PORT; done
udp_free "$GATEWAY_QUIC" BENCH_BASE_PORT


# ---------------------------------------------------------------- build --
build_gateway_and_h3load "$GATEWAY_BIN" "$H3LOAD_BIN"

# ---------------------------------------------------------------- cert ---
leaf_cert

# --------------------------------------------------------------- origin --
start_origin "$ORIGIN_PORT" "    server {
        listen 127.0.0.1:$ORIGIN_PORT;
        location / { default_type text/plain; return 200 \"$ORIGIN_BODY\\n\"; }
        # Accepted connections: how often the gateway dialed the origin.
        location = /__bench_stub { stub_status; }
    }"

# -------------------------------------------------------------- gateway --
cat > "$WORK/gateway.toml" <<CFG
[runtime]
worker_threads = 2
max_keepalive_requests = 1000000
max_requests_per_h3_connection = 1000000
[[listeners]]
name = "bench-h1s"
address = "127.0.0.1:$GATEWAY_TLS"
protocol = "h1s"
[listeners.tls]
cert_path = "$WORK/cert.pem"
key_path = "$WORK/key.pem"
[[listeners.backends]]
address = "127.0.0.1:$ORIGIN_PORT"
protocol = "h1"
[[listeners]]
name = "bench-quic"
address = "127.0.0.1:$GATEWAY_QUIC"
protocol = "quic"
[listeners.quic]
cert_path = "$WORK/cert.pem"
key_path = "$WORK/key.pem"
[[listeners.backends]]
address = "127.0.0.1:$ORIGIN_PORT"
protocol = "h1"
CFG
RUST_LOG=warn "$GATEWAY_BIN" "$WORK/gateway.toml" >"$WORK/gateway.log" 2>&1 &
GATEWAY_PID=$!; PIDS+=("$GATEWAY_PID")
gateway_died() {
  local rc
  wait "$GATEWAY_PID" 2>/dev/null && rc=0 || rc=$?
  die "gateway exited with status $rc: $(grep -v '^\s*$' "$WORK/gateway.log" | tail -n1 | cut -c1-300)"
}
if ! wait_http "https://127.0.0.1:$GATEWAY_TLS/" "$GATEWAY_PID" 10; then
  kill -0 "$GATEWAY_PID" 2>/dev/null || gateway_died
  die "gateway h1s: no 200 from https://127.0.0.1:$GATEWAY_TLS/ within 10 s"
fi
# The quic listener: one HTTP/3 request must succeed (UDP has no refusal a
# shell can see, so ask h3load; a stale binary without quic fails here).
H3_OK=0
for _ in $(seq 10); do
  kill -0 "$GATEWAY_PID" 2>/dev/null || gateway_died
  if "$H3LOAD_BIN" "127.0.0.1:$GATEWAY_QUIC" --ca "$WORK/cert.pem" --single 1 -n 0 \
      --timeout 1 -t 1 >"$WORK/h3probe.txt" 2>&1; then
    H3_OK=1; break
  fi
  sleep 0.5
done
[ "$H3_OK" = 1 ] || die "gateway quic: no HTTP/3 answer on 127.0.0.1:$GATEWAY_QUIC: $(tail -n1 "$WORK/h3probe.txt" | cut -c1-300)"

# ------------------------------------------------------------ measuring --
HZ=$(getconf CLK_TCK)
# cpu_ticks PID -> utime+stime; the comm field may hold spaces, so count
# fields after its closing parenthesis (utime, stime = 12, 13).
cpu_ticks() {
  local v
  v=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | awk '{print $12 + $13}') || v=0
  echo "${v:-0}"
}
# client_cpu FILE -> seconds of user+system of the children, from the
# second line of bash's `times` output ("0m1.234s 0m0.456s").
client_cpu() {
  tail -n1 "$1" | awk '{ t = 0; for (i = 1; i <= 2; i++) { split($i, a, /[ms]/); t += a[1] * 60 + a[2] } print t }'
}
# to_ms VALUE-WITH-UNIT (us, ms, s) -> milliseconds
to_ms() { awk -v v="$1" 'BEGIN{ n=v+0; if (v ~ /us$/) n/=1000; else if (v ~ /ms$/) ; else if (v ~ /s$/) n*=1000; printf "%.2f", n }'; }
# per_req TICKS_OR_SECONDS DIVISOR N -> microseconds per request
per_req() { awk -v d="$1" -v hz="$2" -v n="$3" 'BEGIN{printf "%.1f", d / hz * 1e6 / n}'; }
# origin_accepts -> connections the origin has accepted so far (this
# query's own connection included)
origin_accepts() {
  curl -s -m 2 "http://127.0.0.1:$ORIGIN_PORT/__bench_stub" | awk 'NR == 3 {print $1}'
}
# dials BEFORE AFTER -> origin connections opened in between, less the
# status query's own
dials() { [ -n "$1" ] && [ -n "$2" ] && echo $(($2 - $1 - 1)) || echo "?"; }
# churn PROTO DIALS RESPONSES -> a caveat when the gateway dialed the
# origin for more than one response in ten (CPU per request then includes
# TCP connects, and the two protocols are not compared like for like)
churn() {
  [ "$2" != "?" ] && [ "$2" -gt $(($3 / 10)) ] \
    && echo "  caveat: $1 upstream reuse is low: $2 origin connections for $3 responses" || true
}
# result KEY FILE -> value of KEY on h3load's RESULT line
result() { awk -v k="$1" '/^RESULT / { for (i = 2; i <= NF; i++) { split($i, a, "="); if (a[1] == k) print a[2] } }' "$2"; }

row() { printf "%-6s %-9s %10s  %-34s %10s %12s %9s  %s\n" "$@"; }

# run_h2 -> a row; sets H2_CPU
run_h2() {
  local before after out done_n rps alpn lat errs ccpu a0 a1
  a0=$(origin_accepts)
  before=$(cpu_ticks "$GATEWAY_PID")
  ( h2load -D "$DURATION" -c "$CONNS" -m "$STREAMS" -t "$THREADS" \
      "https://127.0.0.1:$GATEWAY_TLS/" >"$WORK/h2load.txt" 2>&1 || true; times >"$WORK/h2load.times" )
  after=$(cpu_ticks "$GATEWAY_PID")
  a1=$(origin_accepts)
  out=$(cat "$WORK/h2load.txt")
  # requests: N total, N started, N done, N succeeded, N failed, N errored, N timeout
  done_n=$(awk '/^requests:/ {print $6; exit}' <<<"$out")
  rps=$(awk '/^finished in/ {printf "%.0f", $4}' <<<"$out")
  alpn=$(awk '/^Application protocol:/ {print $3; exit}' <<<"$out")
  # time for request:  min  max  mean  sd  +/-sd
  lat=$(awk '/^time for request:/ {print $6, $5; exit}' <<<"$out")
  [ -n "$lat" ] && lat="mean $(to_ms "${lat% *}") max $(to_ms "${lat#* }")"
  errs=$(awk '/^requests:/ {n += $10} /^status codes:/ {n += $5 + $7 + $9} END {print n + 0}' <<<"$out")
  H2_CPU=""
  if [ -z "$done_n" ] || [ "$done_n" = 0 ]; then
    row h2 h2load 0 "-" "-" "-" "-" "h2load failed: $(grep -m1 -iE 'error|fail|no protocol' <<<"$out" || tail -n1 <<<"$out")"
    return
  fi
  H2_CPU=$(per_req $((after - before)) "$HZ" "$done_n")
  ccpu=$(per_req "$(client_cpu "$WORK/h2load.times")" 1 "$done_n")
  row h2 "h2load/${alpn:--}" "$rps" "$lat" "$H2_CPU" "$ccpu" "$(dials "$a0" "$a1")" "$errs"
  churn h2 "$(dials "$a0" "$a1")" "$done_n"
  [ "${alpn:-}" = h2 ] || echo "  caveat: h2load negotiated ${alpn:-nothing}, not h2"
}

# run_h3 -> a row; sets H3_CPU
run_h3() {
  local before after f=$WORK/h3load.txt done_n errs n2 lat ccpu a0 a1
  a0=$(origin_accepts)
  before=$(cpu_ticks "$GATEWAY_PID")
  ( "$H3LOAD_BIN" "127.0.0.1:$GATEWAY_QUIC" --ca "$WORK/cert.pem" --single 0 \
      -c "$CONNS" -m "$STREAMS" -t "$THREADS" -d "$DURATION" >"$f" 2>&1 || true
    times >"$WORK/h3load.times" )
  after=$(cpu_ticks "$GATEWAY_PID")
  a1=$(origin_accepts)
  done_n=$(result requests "$f")
  errs=$(result errors "$f"); n2=$(result non_2xx "$f"); errs=$(( ${errs:-0} + ${n2:-0} ))
  H3_CPU=""
  if [ -z "$done_n" ] || [ "$done_n" = 0 ]; then
    row h3 h3load 0 "-" "-" "-" "-" "h3load failed: $(grep -m1 -iE 'error|fatal' "$f" || tail -n1 "$f")"
    return
  fi
  lat="p50 $(to_ms "$(result p50_us "$f")us") p99 $(to_ms "$(result p99_us "$f")us") max $(to_ms "$(result max_us "$f")us")"
  H3_CPU=$(per_req $((after - before)) "$HZ" "$done_n")
  ccpu=$(per_req "$(client_cpu "$WORK/h3load.times")" 1 "$done_n")
  row h3 h3load/h3 "$(result rps "$f")" "$lat" "$H3_CPU" "$ccpu" "$(dials "$a0" "$a1")" "$errs"
  churn h3 "$(dials "$a0" "$a1")" "$done_n"
  grep -m1 '^first error:' "$f" | sed 's/^/  /' || true
}

echo "H3 vs H2 gateway benchmark: ${DURATION}s per case, $(nproc) cores, loopback, origin nginx 1 worker (h1), ${#ORIGIN_BODY}+1 byte body"
echo "load: ${CONNS} connections x ${STREAMS} streams, ${THREADS} client threads; h2 = h2load over TLS (ALPN), h3 = h3load (quinn + h3)"
echo "latency: h2load gives mean/max of 'time for request' only; h3load gives percentiles"
echo "cpu: gateway user+system from /proc/<pid>/stat (CLK_TCK=$HZ) per completed response; client cpu (bash 'times') for context"
echo "up dials: connections the origin accepted during the run (nginx stub_status); with pooling, about CONNS x STREAMS or fewer"
echo "errors: failed+errored+timeout + non-2xx (h2load) / request errors + non-2xx (h3load)"
echo

# Single requests first, while the gateway is idle.
"$H3LOAD_BIN" "127.0.0.1:$GATEWAY_QUIC" --ca "$WORK/cert.pem" --single 50 -n 0 -t 1 \
  >"$WORK/h3single.txt" 2>&1 || true
H3_SINGLE_US=$(result single_p50_us "$WORK/h3single.txt")
h2load -n 55 -c 1 -m 1 -t 1 "https://127.0.0.1:$GATEWAY_TLS/" >"$WORK/h2single.txt" 2>&1 || true
H2_SINGLE=$(awk '/^time for request:/ {print $4; exit}' "$WORK/h2single.txt")

row proto client req/s "latency (ms)" "cpu us/req" "client us/req" "up dials" errors
run_h2
run_h3

echo
if [ -n "$H3_SINGLE_US" ]; then
  echo "single h3 request (idle connection, median of 50 after 5 warm-up): $(to_ms "${H3_SINGLE_US}us") ms" \
    "(min $(to_ms "$(result single_min_us "$WORK/h3single.txt")us"), p90 $(to_ms "$(result single_p90_us "$WORK/h3single.txt")us");" \
    "handshake $(to_ms "$(result handshake_us "$WORK/h3single.txt")us") ms)"
else
  echo "single h3 request: failed: $(grep -m1 -iE 'error|fatal' "$WORK/h3single.txt" || tail -n1 "$WORK/h3single.txt")"
fi
[ -n "$H2_SINGLE" ] && echo "single h2 request (h2load -c1 -m1 -n55, mean incl. the first): $(to_ms "$H2_SINGLE") ms"

echo
echo "goals: h3 gateway cpu per request <= 1.5x h2; single h3 request on loopback < 1 ms"
if [ -n "${H2_CPU:-}" ] && [ -n "${H3_CPU:-}" ]; then
  awk -v h3="$H3_CPU" -v h2="$H2_CPU" 'BEGIN{
    if (h2 + 0 == 0) { print "ratio h3/h2 cpu per request: n/a (h2 measured as 0)"; exit }
    r = h3 / h2; printf "ratio h3/h2 cpu per request: %.2fx (%s / %s us; goal <= 1.5x: %s)\n", r, h3, h2, (r <= 1.5 ? "met" : "not met") }'
else
  echo "ratio h3/h2 cpu per request: n/a (a load run failed)"
fi
if [ -n "$H3_SINGLE_US" ]; then
  awk -v us="$H3_SINGLE_US" 'BEGIN{ printf "single h3 request: %.3f ms (goal < 1 ms: %s)\n", us / 1000, (us < 1000 ? "met" : "not met") }'
else
  echo "single h3 request: n/a"
fi
kill -0 "$GATEWAY_PID" 2>/dev/null || echo "warning: the gateway exited during the run: $(tail -n1 "$WORK/gateway.log" | cut -c1-300)"
