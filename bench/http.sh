#!/usr/bin/env bash
# HTTP reverse-proxy throughput, latency and CPU per request: nginx vs
# HAProxy vs the gateway's `h1`/`h1s` listeners, all in front of the same
# origin, in one run on this machine (loopback only).
#
#   bash bench/http.sh                      # 10 s per case
#   SECONDS_PER_CASE=2 REBUILD=0 bash bench/http.sh
#
# Origin: one nginx (1 worker, `return 200`, ~100-byte body, keep-alive).
# Proxies, each with keep-alive to the origin and no access logs:
#   nginx   (2 workers, upstream keepalive 64), cleartext H1 + TLS with h2
#   HAProxy (mode http, nbthread 2, http-reuse always), cleartext H1 + TLS
#           with alpn h2,http/1.1
#   gateway (worker_threads 2), listeners h1 + h1s
# Load: wrk -t2 -c64 --latency on each H1 port (and the origin directly as
# a baseline); h2load -c16 -m10 -t2 over TLS on each TLS port (protocol
# chosen by ALPN; the negotiated one is printed).
# CPU: user+system ticks from /proc/<pid>/stat of every process of the
# proxy (nginx master + workers, the haproxy process, the gateway process),
# before and after each run, divided by the requests completed.
#
# Knobs: SECONDS_PER_CASE (10), BENCH_BASE_PORT (25300; uses base+1..base+7),
# REBUILD=0 (skip `cargo build --release` when the binary exists).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh

DURATION=${SECONDS_PER_CASE:-10}
BASE=${BENCH_BASE_PORT:-25300}
ORIGIN_PORT=$((BASE + 1))
NGINX_H1=$((BASE + 2)); NGINX_TLS=$((BASE + 3))
HAPROXY_H1=$((BASE + 4)); HAPROXY_TLS=$((BASE + 5))
GATEWAY_H1=$((BASE + 6)); GATEWAY_TLS=$((BASE + 7))
GATEWAY_BIN=target/release/expressgateway

need nginx nginx
need haproxy haproxy
need wrk wrk
need h2load nghttp2-client
need curl curl
need openssl openssl



# Refuse to start if any port is taken: a stranger answering on our port
# would be benchmarked in place of the server we failed to start.
for port in $(seq $((BASE + 1)) $((BASE + 7))); do tcp_free "$port" BENCH_BASE_PORT; done


# ---------------------------------------------------------------- cert ---
leaf_cert
cat "$WORK/cert.pem" "$WORK/key.pem" > "$WORK/haproxy.pem"
chmod 600 "$WORK/haproxy.pem"

# ---------------------------------------------------------------- nginx --
start_origin "$ORIGIN_PORT" "    server {
        listen 127.0.0.1:$ORIGIN_PORT;
        location / { default_type text/plain; return 200 \"$ORIGIN_BODY\\n\"; }
    }"
mkdir -p "$WORK/nginx"

{
  echo "daemon off; worker_processes 2;"
  nginx_common "$WORK/nginx"
  echo "http {"
  nginx_http_common "$WORK/nginx"
  cat <<CFG
    upstream origin {
        server 127.0.0.1:$ORIGIN_PORT;
        keepalive 64;
        keepalive_requests 100000;
    }
    server {
        listen 127.0.0.1:$NGINX_H1;
        listen 127.0.0.1:$NGINX_TLS ssl http2;
        ssl_certificate $WORK/cert.pem;
        ssl_certificate_key $WORK/key.pem;
        location / {
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
CFG
} > "$WORK/nginx/nginx.conf"
nginx -p "$WORK/nginx" -e "$WORK/nginx/error.log" -c "$WORK/nginx/nginx.conf" >/dev/null 2>&1 &
NGINX_PID=$!; PIDS+=("$NGINX_PID")

# -------------------------------------------------------------- haproxy --
cat > "$WORK/haproxy.cfg" <<CFG
global
    maxconn 8192
    nbthread 2
defaults
    mode http
    option http-keep-alive
    http-reuse always
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    timeout http-keep-alive 30s
frontend fe
    bind 127.0.0.1:$HAPROXY_H1
    bind 127.0.0.1:$HAPROXY_TLS ssl crt $WORK/haproxy.pem alpn h2,http/1.1
    default_backend be
backend be
    server s1 127.0.0.1:$ORIGIN_PORT
CFG
haproxy -f "$WORK/haproxy.cfg" -db >"$WORK/haproxy.log" 2>&1 &
HAPROXY_PID=$!; PIDS+=("$HAPROXY_PID")

wait_http "http://127.0.0.1:$NGINX_H1/" "$NGINX_PID" 10 \
  && wait_http "https://127.0.0.1:$NGINX_TLS/" "$NGINX_PID" 5 \
  || { cat "$WORK/nginx/error.log" >&2 || true; die "nginx proxy did not start"; }
wait_http "http://127.0.0.1:$HAPROXY_H1/" "$HAPROXY_PID" 10 \
  && wait_http "https://127.0.0.1:$HAPROXY_TLS/" "$HAPROXY_PID" 5 \
  || { cat "$WORK/haproxy.log" >&2 || true; die "haproxy did not start"; }

# -------------------------------------------------------------- gateway --
GATEWAY_PID=""; GATEWAY_WHY=""; GATEWAY_TLS_WHY=""
if [ -x "$GATEWAY_BIN" ] && [ "${REBUILD:-1}" = 0 ]; then :
elif ! cargo build --release -q >"$WORK/build.log" 2>&1; then
  GATEWAY_WHY="cargo build --release failed: $(grep -m1 '^error' "$WORK/build.log" || tail -n1 "$WORK/build.log")"
fi
if [ -z "$GATEWAY_WHY" ] && [ ! -x "$GATEWAY_BIN" ]; then GATEWAY_WHY="$GATEWAY_BIN missing"; fi
if [ -z "$GATEWAY_WHY" ]; then
  cat > "$WORK/gateway.toml" <<CFG
[runtime]
worker_threads = 2
max_keepalive_requests = 1000000
[[listeners]]
name = "bench-h1"
address = "127.0.0.1:$GATEWAY_H1"
protocol = "h1"
[[listeners.backends]]
address = "127.0.0.1:$ORIGIN_PORT"
protocol = "h1"
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
CFG
  RUST_LOG=warn "$GATEWAY_BIN" "$WORK/gateway.toml" >"$WORK/gateway.log" 2>&1 &
  GATEWAY_PID=$!; PIDS+=("$GATEWAY_PID")
  if ! wait_http "http://127.0.0.1:$GATEWAY_H1/" "$GATEWAY_PID" 5; then
    if kill -0 "$GATEWAY_PID" 2>/dev/null; then
      GATEWAY_WHY="no 200 from http://127.0.0.1:$GATEWAY_H1/ within 5 s"
    else
      wait "$GATEWAY_PID" 2>/dev/null && rc=0 || rc=$?
      GATEWAY_WHY="exited with status $rc: $(grep -v '^\s*$' "$WORK/gateway.log" | tail -n1 | cut -c1-200)"
    fi
  elif ! wait_http "https://127.0.0.1:$GATEWAY_TLS/" "$GATEWAY_PID" 5; then
    GATEWAY_TLS_WHY="no 200 from https://127.0.0.1:$GATEWAY_TLS/ within 5 s"
  fi
fi

# ------------------------------------------------------------ measuring --
HZ=$(getconf CLK_TCK)
# proc_pids PID -> the pid and its direct children (nginx master + workers)
proc_pids() { echo "$1"; pgrep -P "$1" 2>/dev/null || true; }
# cpu_ticks PID... -> summed utime+stime; the comm field may hold spaces,
# so count fields after its closing parenthesis (utime, stime = 12, 13).
cpu_ticks() {
  local p t=0 v
  for p in "$@"; do
    v=$(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null | awk '{print $12 + $13}') || v=0
    t=$((t + ${v:-0}))
  done
  echo "$t"
}

ROWS=()
# to_ms VALUE-WITH-UNIT (us, ms, s) -> milliseconds
to_ms() { awk -v v="$1" 'BEGIN{ n=v+0; if (v ~ /us$/) n/=1000; else if (v ~ /ms$/) ; else if (v ~ /s$/) n*=1000; printf "%.2f", n }'; }

# row NAME PROTO ALPN RPS LAT CPU_US ERRORS
row() { printf "%-8s %-6s %-9s %10s  %-22s %10s  %s\n" "$@"; }

# run_wrk NAME PORT PID -> a row; sets CPU_US
run_wrk() {
  local name=$1 port=$2 pid=$3 pids before after out reqs rps p99 errs
  pids=$(proc_pids "$pid")
  before=$(cpu_ticks $pids)
  out=$(wrk -t2 -c64 -d"${DURATION}s" --latency "http://127.0.0.1:$port/" 2>&1) || true
  after=$(cpu_ticks $pids)
  echo "$out" > "$WORK/wrk-$name.txt"
  reqs=$(awk '/requests in/ {print $1; exit}' <<<"$out")
  rps=$(awk '/^Requests\/sec:/ {printf "%.0f", $2}' <<<"$out")
  p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
  errs=$(awk '/Non-2xx/ {n += $NF} /Socket errors/ {gsub(/,/, ""); n += $4 + $6 + $8 + $10} END {print n + 0}' <<<"$out")
  if [ -z "$reqs" ] || [ "$reqs" = 0 ]; then
    row "$name" h1 - 0 "-" "-" "wrk failed: $(tail -n1 <<<"$out")"; CPU_US=""; return
  fi
  CPU_US=$(awk -v d=$((after - before)) -v hz="$HZ" -v n="$reqs" 'BEGIN{printf "%.1f", d / hz * 1e6 / n}')
  row "$name" h1 http/1.1 "$rps" "p99 $(to_ms "$p99")" "$CPU_US" "$errs"
}

# run_h2load NAME PORT PID -> a row; sets CPU_US
run_h2load() {
  local name=$1 port=$2 pid=$3 pids before after out done_n rps alpn lat errs
  pids=$(proc_pids "$pid")
  before=$(cpu_ticks $pids)
  out=$(h2load -D "$DURATION" -c 16 -m 10 -t 2 "https://127.0.0.1:$port/" 2>&1) || true
  after=$(cpu_ticks $pids)
  echo "$out" > "$WORK/h2load-$name.txt"
  # requests: N total, N started, N done, N succeeded, N failed, N errored, N timeout
  done_n=$(awk '/^requests:/ {print $6; exit}' <<<"$out")
  rps=$(awk '/^finished in/ {printf "%.0f", $4}' <<<"$out")
  alpn=$(awk '/^Application protocol:/ {print $3; exit}' <<<"$out")
  # time for request:  min  max  mean  sd  +/-sd
  lat=$(awk '/^time for request:/ {print $6, $5; exit}' <<<"$out")
  [ -n "$lat" ] && lat="mean $(to_ms "${lat% *}") max $(to_ms "${lat#* }")"
  # "failed" already counts the errored and timed-out ones
  errs=$(awk '/^requests:/ {n += $10} /^status codes:/ {n += $5 + $7 + $9} END {print n + 0}' <<<"$out")
  if [ -z "$done_n" ] || [ "$done_n" = 0 ]; then
    row "$name" h2 "${alpn:--}" 0 "-" "-" "h2load failed: $(grep -m1 -iE 'error|fail|no protocol' <<<"$out" || tail -n1 <<<"$out")"
    CPU_US=""; return
  fi
  CPU_US=$(awk -v d=$((after - before)) -v hz="$HZ" -v n="$done_n" 'BEGIN{printf "%.1f", d / hz * 1e6 / n}')
  ALPN[$name]=${alpn:--}
  row "$name" h2 "${alpn:--}" "$rps" "$lat" "$CPU_US" "$errs"
}

echo "HTTP proxy benchmark: ${DURATION}s per case, $(nproc) cores, loopback, origin nginx 1 worker, ${#ORIGIN_BODY}+1 byte body"
echo "h1: wrk -t2 -c64 --latency on the cleartext port; latency = wrk's 99th percentile"
echo "h2: h2load -c16 -m10 -t2 over TLS (ALPN); h2load gives no percentiles, so latency = mean and max of"
echo "    'time for request'; alpn column = the protocol actually negotiated"
echo "cpu: user+system of all proxy processes from /proc/<pid>/stat (CLK_TCK=$HZ), per completed request"
echo "errors: non-2xx responses + socket errors (wrk) / failed+errored+timeout + non-2xx (h2load)"
echo
row proxy proto alpn req/s "latency (ms)" "cpu us/req" errors
run_wrk origin "$ORIGIN_PORT" "$ORIGIN_PID"
declare -A CPU ALPN
for proto in h1 h2; do
  for name in nginx haproxy gateway; do
    case $name in
      nginx) pid=$NGINX_PID; h1=$NGINX_H1; tls=$NGINX_TLS ;;
      haproxy) pid=$HAPROXY_PID; h1=$HAPROXY_H1; tls=$HAPROXY_TLS ;;
      gateway) pid=$GATEWAY_PID; h1=$GATEWAY_H1; tls=$GATEWAY_TLS ;;
    esac
    if [ "$name" = gateway ]; then
      if [ -n "$GATEWAY_WHY" ]; then
        [ "$proto" = h1 ] && echo "gateway: not available ($GATEWAY_WHY)"
        continue
      fi
      if ! kill -0 "$GATEWAY_PID" 2>/dev/null; then
        GATEWAY_WHY="exited during the run: $(grep -v '^\s*$' "$WORK/gateway.log" | tail -n1 | cut -c1-200)"
        echo "gateway: not available ($GATEWAY_WHY)"; continue
      fi
      if [ "$proto" = h2 ] && [ -n "$GATEWAY_TLS_WHY" ]; then
        echo "gateway h1s: not available ($GATEWAY_TLS_WHY)"; continue
      fi
    fi
    if [ "$proto" = h1 ]; then run_wrk "$name" "$h1" "$pid"; else run_h2load "$name" "$tls" "$pid"; fi
    CPU[$name-$proto]=$CPU_US
  done
done

echo
echo "goal: gateway cpu per request <= 0.8x the better of nginx and HAProxy, per protocol"
for proto in h1 h2; do
  n=${CPU[nginx-$proto]:-}; h=${CPU[haproxy-$proto]:-}; g=${CPU[gateway-$proto]:-}
  if [ -z "$n" ] && [ -z "$h" ]; then echo "ratio $proto: n/a (no nginx or HAProxy result)"; continue; fi
  best=$(awk -v n="${n:-1e18}" -v h="${h:-1e18}" 'BEGIN{print (n + 0 <= h + 0) ? n : h}')
  who=$([ "$best" = "$n" ] && echo nginx || echo haproxy)
  if [ -z "$g" ]; then
    echo "ratio $proto: gateway n/a (best is $who at $best us/req)"
  else
    awk -v g="$g" -v b="$best" -v w="$who" -v p="$proto" 'BEGIN{
      if (b + 0 == 0) { printf "ratio %s: n/a (%s cpu/req measured as 0)\n", p, w; exit }
      r = g / b; printf "ratio %s: gateway/%s cpu per request %.2fx (goal <= 0.8x: %s)\n", p, w, r, (r <= 0.8 ? "met" : "not met") }'
    if [ "$proto" = h2 ] && [ "${ALPN[gateway]:-}" != h2 ]; then
      echo "  caveat: the gateway negotiated ${ALPN[gateway]:-nothing}, not h2 (h2load pipelines -m 10 over it); not like for like"
    fi
  fi
done
