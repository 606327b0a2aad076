# Path l4: TCP byte relay, iperf3 -P STREAMS for SECONDS_PER_CASE, client to
# server (up) and back (reverse): the backend directly, HAProxy `mode tcp`
# with splice-auto (its fastest relay), the gateway's `tcp` listener
# (sourced by run.sh). rate = Gbit/s received; cpu = the proxy's
# utime+stime per GiB moved, in ms. iperf3 server and client on LOAD_CPUS
# (so the direct path runs on those CPUs alone).
# L4_UNPINNED=1: no taskset and one worker per core, as the issue's first
# L4 figures were taken (the pinned direct path runs both iperf3 ends on
# one CPU, which the proxied paths cannot match).
if [ "${L4_UNPINNED:-0}" = 1 ]; then
  on_proxy() { "$@"; }
  on_load() { "$@"; }
  PROXY_WORKERS=$(nproc)
fi
need iperf3 iperf3
need haproxy haproxy
STREAMS=${STREAMS:-4}
BACKEND_PORT=$((PATH_BASE + 1)); HAPROXY_PORT=$((PATH_BASE + 2)); GATEWAY_PORT=$((PATH_BASE + 3))
for port in $BACKEND_PORT $HAPROXY_PORT $GATEWAY_PORT; do tcp_free "$port" BENCH_BASE_PORT; done

on_load iperf3 -s -p "$BACKEND_PORT" >"$WORK/iperf.log" 2>&1 &
IPERF_PID=$!; PIDS+=("$IPERF_PID")
ready_port "$BACKEND_PORT" "$IPERF_PID" "$WORK/iperf.log" "iperf3 server"

start_haproxy "defaults
    mode tcp
    option splice-auto
    timeout connect 5s
    timeout client 1h
    timeout server 1h
frontend fe
    bind 127.0.0.1:$HAPROXY_PORT
    default_backend be
backend be
    server s1 127.0.0.1:$BACKEND_PORT"
PID_haproxy=$LAST_PID
ready_port "$HAPROXY_PORT" "$PID_haproxy" "$WORK/haproxy.log" haproxy

{ gateway_runtime; gateway_listener tcp "$GATEWAY_PORT" "$BACKEND_PORT"; } >"$WORK/gateway.toml"
start_gateway gateway
PID_gateway=$LAST_PID
ready_port "$GATEWAY_PORT" "$PID_gateway" "$WORK/gateway.log" gateway

# iperf_case CASE PROXY PORT PID DIR(-R or empty)
iperf_case() {
  local f="$WORK/iperf-$1-$2.json" bytes secs
  case_begin "$4"
  on_load iperf3 -c 127.0.0.1 -p "$3" -t "$WARMUP" -P "$STREAMS" $5 >/dev/null 2>&1 || true
  case_start
  on_load iperf3 -c 127.0.0.1 -p "$3" -t "$DURATION" -P "$STREAMS" $5 -J >"$f" 2>&1 || true
  read -r bytes secs < <(python3 -c "import json,sys; d=json.load(open(sys.argv[1]))['end']['sum_received']; print(int(d['bytes']), d['seconds'])" "$f" 2>/dev/null) || true
  case_end 0
  [ -n "${bytes:-}" ] && [ "$bytes" != 0 ] || { failed "$1" "$2" "iperf3: $(grep -m1 error "$f" || tail -n1 "$f")"; return; }
  local gbps cpu
  gbps=$(awk -v b="$bytes" -v s="$secs" 'BEGIN{printf "%.2f", b * 8 / s / 1e9}')
  cpu=$(awk -v d="$TICKS" -v hz="$HZ" -v b="$bytes" 'BEGIN{printf "%.1f", d / hz * 1e3 / (b / 2^30)}')
  [ "$2" = direct ] && cpu="-"
  record "$1" "$2" "$gbps" Gbit/s - - "$cpu" ms/GiB 0
}

for dir in up reverse; do
  flag=""; [ "$dir" = reverse ] && flag="-R"
  iperf_case "$dir" direct "$BACKEND_PORT" "" "$flag"
  iperf_case "$dir" haproxy "$HAPROXY_PORT" "$PID_haproxy" "$flag"
  iperf_case "$dir" gateway "$GATEWAY_PORT" "$PID_gateway" "$flag"
done
