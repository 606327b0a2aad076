# Path grpc: gRPC unary calls over TLS (ALPN h2) -> proxy -> h2c origin
# (sourced by run.sh). Origin: tests/e2e/py/grpc_peer.py server (grpcio,
# Python: it caps calls/s for every proxy alike, so compare cpu per call);
# `/test.Echo/Unary` echoes. Load: h2load -t1 -c16 -m8, POST of a prebuilt
# gRPC frame ("hello"). Proxies: nginx (grpc_pass), HAProxy (`proto h2` to
# the origin), the gateway (`h1s`, an `h2` backend); the origin directly
# (h2c) as a baseline. up_conns = connections open to the origin mid-run (ss).
need haproxy haproxy
need h2load nghttp2-client
python3 -c 'import grpc, grpc_health.v1.health' 2>/dev/null \
  || PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install -q grpcio grpcio-health-checking
HAPROXY_TLS=$((PATH_BASE + 1)); GATEWAY_TLS=$((PATH_BASE + 2)); NGINX_TLS=$((PATH_BASE + 3))
for port in $HAPROXY_TLS $GATEWAY_TLS $NGINX_TLS; do tcp_free "$port" BENCH_BASE_PORT; done
leaf_cert
# One gRPC message frame: uncompressed, length 5, "hello".
printf '\x00\x00\x00\x00\x05hello' >"$WORK/call.bin"
GRPC_LOAD=(-t1 -c16 -m8 -d "$WORK/call.bin" -H 'content-type: application/grpc' -H 'te: trailers')

# The origin exits when its stdin closes: a fifo held open by a sleeper.
mkfifo "$WORK/origin.in"
sleep 100000 >"$WORK/origin.in" &
PIDS+=($!)
on_load python3 crates/expressgateway/tests/e2e/py/grpc_peer.py server --lifetime 100000 \
  <"$WORK/origin.in" >"$WORK/origin.out" 2>"$WORK/origin.log" &
ORIGIN_PID=$!; PIDS+=("$ORIGIN_PID")
for _ in $(seq 100); do grep -q port "$WORK/origin.out" 2>/dev/null && break; sleep 0.1; done
ORIGIN_PORT=$(sed -n 's/.*"port": \([0-9]*\).*/\1/p' "$WORK/origin.out")
[ -n "$ORIGIN_PORT" ] || die "grpcio origin did not start: $(tail -n3 "$WORK/origin.log")"
UPSTREAM="ss $ORIGIN_PORT"

start_haproxy "defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
frontend fe
    bind 127.0.0.1:$HAPROXY_TLS ssl crt $WORK/haproxy.pem alpn h2
    default_backend be
backend be
    server s1 127.0.0.1:$ORIGIN_PORT proto h2"
PID_haproxy=$LAST_PID

start_nginx_proxy "$(nginx_upstream grpc_origin "$ORIGIN_PORT")
    server {
        listen 127.0.0.1:$NGINX_TLS ssl http2;
        ssl_certificate $WORK/cert.pem;
        ssl_certificate_key $WORK/key.pem;
        location / { grpc_pass grpc://grpc_origin; }
    }"
PID_nginx=$LAST_PID

{ gateway_runtime; gateway_listener h1s "$GATEWAY_TLS" "$ORIGIN_PORT" h2; } >"$WORK/gateway.toml"
start_gateway gateway
PID_gateway=$LAST_PID

ready_port "$HAPROXY_TLS" "$PID_haproxy" "$WORK/haproxy.log" haproxy
ready_port "$NGINX_TLS" "$PID_nginx" "$WORK/nginx/error.log" nginx
ready_port "$GATEWAY_TLS" "$PID_gateway" "$WORK/gateway.log" gateway

WANT_ALPN=h2
h2load_case unary direct "$ORIGIN_PID" "http://127.0.0.1:$ORIGIN_PORT/test.Echo/Unary" "${GRPC_LOAD[@]}"
for p in nginx haproxy gateway; do
  port_var=$(echo "${p}_TLS" | tr a-z A-Z)
  h2load_case unary "$p" "$(eval "echo \$PID_$p")" "https://127.0.0.1:${!port_var}/test.Echo/Unary" "${GRPC_LOAD[@]}"
done
