# Path ws: WebSocket echo over HTTP/1.1 (RFC 6455), sourced by run.sh.
# Origin and client: examples/wsload (tokio-tungstenite), `load -c CONNS -m
# IN_FLIGHT -s SIZE`; a message counts once its echo is back (it crosses
# the proxy twice). Proxies: nginx (proxy_pass with the Upgrade headers),
# HAProxy (`mode http`, which tunnels the upgraded connection as bytes) and
# the gateway's `h1` listener (its relay parses every frame). wsload prints
# no latencies; up_conns = connections open to the origin mid-run (ss).
need haproxy haproxy
[ -x "$WSLOAD_BIN" ] || die "$WSLOAD_BIN missing (REBUILD=0 with no build?)"
WS_LOAD=(-c "${CONNS:-16}" -m "${IN_FLIGHT:-4}" -s "${SIZE:-128}")
ORIGIN_PORT=$((PATH_BASE + 1)); GATEWAY_PORT=$((PATH_BASE + 2)); HAPROXY_PORT=$((PATH_BASE + 3))
NGINX_PORT=$((PATH_BASE + 4))
for port in $ORIGIN_PORT $GATEWAY_PORT $HAPROXY_PORT $NGINX_PORT; do tcp_free "$port" BENCH_BASE_PORT; done

on_load "$WSLOAD_BIN" serve "127.0.0.1:$ORIGIN_PORT" >"$WORK/origin.log" 2>&1 &
ORIGIN_PID=$!; PIDS+=("$ORIGIN_PID")
ready_port "$ORIGIN_PORT" "$ORIGIN_PID" "$WORK/origin.log" "wsload origin"
UPSTREAM="ss $ORIGIN_PORT"

{ gateway_runtime; gateway_listener h1 "$GATEWAY_PORT" "$ORIGIN_PORT"; } >"$WORK/gateway.toml"
start_gateway gateway
PID_gateway=$LAST_PID

start_haproxy "$(haproxy_http_defaults)
frontend ws
    bind 127.0.0.1:$HAPROXY_PORT
    default_backend origin
backend origin
    server o 127.0.0.1:$ORIGIN_PORT"
PID_haproxy=$LAST_PID

start_nginx_proxy "    server {
        listen 127.0.0.1:$NGINX_PORT;
        location / {
            proxy_pass http://127.0.0.1:$ORIGIN_PORT;
            proxy_http_version 1.1;
            proxy_set_header Upgrade \$http_upgrade;
            proxy_set_header Connection upgrade;
            proxy_read_timeout 60s;
        }
    }"
PID_nginx=$LAST_PID

ready_port "$GATEWAY_PORT" "$PID_gateway" "$WORK/gateway.log" gateway
ready_port "$HAPROXY_PORT" "$PID_haproxy" "$WORK/haproxy.log" haproxy
ready_port "$NGINX_PORT" "$PID_nginx" "$WORK/nginx/error.log" nginx

# ws_case PROXY PORT PID
ws_case() {
  local f="$WORK/ws-$1.txt" msgs secs
  case_begin "$3"
  on_load "$WSLOAD_BIN" load "ws://127.0.0.1:$2/bench" "${WS_LOAD[@]}" -d "$WARMUP" >/dev/null 2>&1 || true
  case_start
  on_load "$WSLOAD_BIN" load "ws://127.0.0.1:$2/bench" "${WS_LOAD[@]}" -d "$DURATION" >"$f" 2>&1 || true
  msgs=$(tail -n1 "$f" | sed -n 's/.*messages=\([0-9]*\).*/\1/p')
  secs=$(tail -n1 "$f" | sed -n 's/.*seconds=\([0-9.]*\).*/\1/p')
  case_end "${msgs:-0}"
  [ -n "$msgs" ] && [ "$msgs" != 0 ] || { failed echo "$1" "wsload: $(tail -n1 "$f")"; return; }
  record echo "$1" "$(awk -v m="$msgs" -v s="$secs" 'BEGIN{printf "%.0f", m / s}')" msg/s - - "$CPU_PER" us/msg 0
}
ws_case nginx "$NGINX_PORT" "$PID_nginx"
ws_case haproxy "$HAPROXY_PORT" "$PID_haproxy"
ws_case gateway "$GATEWAY_PORT" "$PID_gateway"
