# Sourced by bench/paths/*.sh (after lib.sh and measure.sh): starting the
# origin, the gateway and its peers, each pinned (proxies on PROXY_CPUS,
# origins on LOAD_CPUS) and each with PROXY_WORKERS workers. Every start_*
# sets LAST_PID and adds the process to PIDS (stopped on exit).

# bench_origin PORT [LOCATIONS]: the one-worker nginx origin of the HTTP
# paths: `/` answers ORIGIN_BODY, /__bench_stub its stub_status (accepted
# connections: how often a proxy dialed it), plus LOCATIONS.
bench_origin() {
  start_origin "$1" "    server {
        listen 127.0.0.1:$1;
        location / { default_type text/plain; return 200 \"$ORIGIN_BODY\\n\"; }
        location = /__bench_stub { stub_status; }
${2:-}
    }"
  pin_load "$ORIGIN_PID"
  UPSTREAM="stub $1"
}

# gateway_runtime: the [runtime] table of every gateway config here:
# keep-alive far above any run's request count (as nginx's and HAProxy's
# here), so no run measures reconnects; every bench client comes from
# 127.0.0.1, so the per-IP cap (1024 by default) is lifted as the peers
# have none.
gateway_runtime() {
  cat <<CFG
[runtime]
worker_threads = $PROXY_WORKERS
per_ip_connection_cap = 1000000
max_keepalive_requests = 1000000
max_requests_per_h3_connection = 1000000
CFG
}
# gateway_h2_unlimited: h2load does not reconnect after the graceful GOAWAY
# that recycles an HTTP/2 connection (default every 1000 streams).
gateway_h2_unlimited() {
  printf '[listeners.h2_security]\nmax_requests_per_connection = 0\n'
}
# gateway_tls: the [listeners.tls] table on the bench certificate.
gateway_tls() {
  printf '[listeners.tls]\ncert_path = "%s"\nkey_path = "%s"\n' "$WORK/cert.pem" "$WORK/key.pem"
}

# gateway_listener PROTOCOL PORT BACKEND_PORT [BACKEND_PROTOCOL [EXTRA]]:
# one [[listeners]] table on 127.0.0.1:PORT with one backend. h1s and quic
# get the bench certificate, h1 and h1s unlimited HTTP/2 streams; EXTRA
# lines go after the protocol's own table (e.g. quic keys).
gateway_listener() {
  printf '[[listeners]]\nname = "bench-%s-%s"\naddress = "127.0.0.1:%s"\nprotocol = "%s"\n' "$1" "$2" "$2" "$1"
  case $1 in
    h1s) gateway_tls; gateway_h2_unlimited ;;
    h1) gateway_h2_unlimited ;;
    quic) printf '[listeners.quic]\ncert_path = "%s"\nkey_path = "%s"\n' "$WORK/cert.pem" "$WORK/key.pem" ;;
  esac
  [ -z "${5:-}" ] || echo "$5"
  printf '[[listeners.backends]]\naddress = "127.0.0.1:%s"\n' "$3"
  [ -z "${4:-}" ] || printf 'protocol = "%s"\n' "$4"
}

# start_gateway NAME: runs $GATEWAY_BIN on $WORK/NAME.toml, pinned.
start_gateway() {
  [ -x "$GATEWAY_BIN" ] || die "$GATEWAY_BIN missing (REBUILD=0 with no build?)"
  RUST_LOG=warn on_proxy "$GATEWAY_BIN" "$WORK/$1.toml" >"$WORK/$1.log" 2>&1 &
  LAST_PID=$!; PIDS+=("$LAST_PID")
}
# ready_http URL PID LOG WHAT: wait for a 200 or die with the log's tail.
ready_http() {
  wait_http "$1" "$2" 10 || die "$4: no 200 from $1: $(grep -v '^\s*$' "$3" 2>/dev/null | tail -n3 | cut -c1-300)"
}
# ready_h3 HOST:PORT PID LOG WHAT: one HTTP/3 request must succeed (UDP has
# no refusal a shell can see).
ready_h3() {
  local _
  for _ in $(seq 20); do
    kill -0 "$2" 2>/dev/null || die "$4 exited: $(tail -n3 "$3" | cut -c1-300)"
    "$H3LOAD_BIN" "$1" --ca "$WORK/cert.pem" --single 1 -n 0 --timeout 1 -t 1 >"$WORK/probe.txt" 2>&1 && return 0
    sleep 0.5
  done
  die "$4: no HTTP/3 answer on $1: $(tail -n1 "$WORK/probe.txt")"
}
# ready_port PORT PID LOG WHAT: something accepts TCP on PORT.
ready_port() {
  local _
  for _ in $(seq 100); do
    kill -0 "$2" 2>/dev/null || die "$4 exited: $(tail -n3 "$3" 2>/dev/null)"
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  die "$4: nothing listens on 127.0.0.1:$1: $(tail -n3 "$3" 2>/dev/null)"
}

# start_nginx_proxy HTTP_BODY: nginx (master + PROXY_WORKERS workers) with
# HTTP_BODY inside `http {}`, in $WORK/nginx.
start_nginx_proxy() {
  local dir="$WORK/nginx"
  mkdir -p "$dir"
  {
    echo "daemon off; worker_processes $PROXY_WORKERS;"
    nginx_common "$dir"
    echo "http {"
    nginx_http_common "$dir"
    echo "$1"
    echo "}"
  } >"$dir/nginx.conf"
  on_proxy nginx -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf" >/dev/null 2>&1 &
  LAST_PID=$!; PIDS+=("$LAST_PID")
}
# nginx_upstream NAME PORT: an upstream block with a keep-alive pool above
# the most requests any case has in flight (h2: 16 x 8), so nginx does not
# close and reopen origin connections.
nginx_upstream() {
  printf '    upstream %s {\n        server 127.0.0.1:%s;\n        keepalive 256;\n        keepalive_requests 1000000;\n    }\n' "$1" "$2"
}

# start_haproxy BODY: HAProxy (nbthread PROXY_WORKERS) with the global
# section here and BODY after it; $WORK/haproxy.pem is the certificate
# (when leaf_cert made one).
start_haproxy() {
  [ -f "$WORK/haproxy.pem" ] || [ ! -f "$WORK/cert.pem" ] || { cat "$WORK/cert.pem" "$WORK/key.pem" >"$WORK/haproxy.pem"; chmod 600 "$WORK/haproxy.pem"; }
  {
    printf 'global\n    # 4096: HAProxy wants about 5 fds per maxconn in mode tcp, within this\n    # sandbox fd limit (20000); above the idle path 2000 connections.\n'
    printf '    maxconn 4096\n    nbthread %s\n' "$PROXY_WORKERS"
    echo "$1"
  } >"$WORK/haproxy.cfg"
  on_proxy haproxy -f "$WORK/haproxy.cfg" -db >"$WORK/haproxy.log" 2>&1 &
  LAST_PID=$!; PIDS+=("$LAST_PID")
}
# haproxy_http_defaults: keep-alive both ways, connection reuse always.
haproxy_http_defaults() {
  cat <<CFG
defaults
    mode http
    option http-keep-alive
    http-reuse always
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout tunnel 60s
    timeout http-keep-alive 60s
CFG
}

# http_peers BASE: the origin and the three HTTP proxies of the h1, h2 and
# idle paths, each with a cleartext H1 port, a TLS port (ALPN h2) and an
# h2c (prior knowledge) port. Sets ORIGIN_PORT and, per proxy, PID_x,
# H1_x, TLS_x and H2C_x (x = nginx, haproxy, gateway; the gateway's `h1`
# listener takes both H1 and h2c, so H2C_gateway = H1_gateway).
http_peers() {
  local b=$1 p
  for p in $(seq $((b + 1)) $((b + 9))); do tcp_free "$p" BENCH_BASE_PORT; done
  ORIGIN_PORT=$((b + 1))
  H1_nginx=$((b + 2)); TLS_nginx=$((b + 3)); H2C_nginx=$((b + 4))
  H1_haproxy=$((b + 5)); TLS_haproxy=$((b + 6)); H2C_haproxy=$((b + 7))
  H1_gateway=$((b + 8)); TLS_gateway=$((b + 9)); H2C_gateway=$H1_gateway
  leaf_cert
  bench_origin "$ORIGIN_PORT"

  start_nginx_proxy "$(nginx_upstream origin "$ORIGIN_PORT")
    server {
        listen 127.0.0.1:$H1_nginx;
        listen 127.0.0.1:$TLS_nginx ssl http2;
        listen 127.0.0.1:$H2C_nginx http2;
        ssl_certificate $WORK/cert.pem;
        ssl_certificate_key $WORK/key.pem;
        location / {
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
        }
    }"
  PID_nginx=$LAST_PID

  start_haproxy "$(haproxy_http_defaults)
frontend fe
    bind 127.0.0.1:$H1_haproxy
    bind 127.0.0.1:$TLS_haproxy ssl crt $WORK/haproxy.pem alpn h2,http/1.1
    bind 127.0.0.1:$H2C_haproxy proto h2
    default_backend be
backend be
    server s1 127.0.0.1:$ORIGIN_PORT"
  PID_haproxy=$LAST_PID

  { gateway_runtime
    gateway_listener h1 "$H1_gateway" "$ORIGIN_PORT" h1
    gateway_listener h1s "$TLS_gateway" "$ORIGIN_PORT" h1
  } >"$WORK/gateway.toml"
  start_gateway gateway
  PID_gateway=$LAST_PID

  ready_http "http://127.0.0.1:$H1_nginx/" "$PID_nginx" "$WORK/nginx/error.log" nginx
  ready_http "https://127.0.0.1:$TLS_nginx/" "$PID_nginx" "$WORK/nginx/error.log" nginx
  ready_http "http://127.0.0.1:$H1_haproxy/" "$PID_haproxy" "$WORK/haproxy.log" haproxy
  ready_http "https://127.0.0.1:$TLS_haproxy/" "$PID_haproxy" "$WORK/haproxy.log" haproxy
  ready_http "http://127.0.0.1:$H1_gateway/" "$PID_gateway" "$WORK/gateway.log" gateway
  ready_http "https://127.0.0.1:$TLS_gateway/" "$PID_gateway" "$WORK/gateway.log" gateway
}

# peer_pid NAME -> the pid of proxy NAME (direct: the origin)
peer_pid() { if [ "$1" = direct ]; then echo "$ORIGIN_PID"; else eval "echo \$PID_$1"; fi; }
# peer_port KIND NAME -> its port of KIND (H1, TLS, H2C)
peer_port() { if [ "$2" = direct ]; then echo "$ORIGIN_PORT"; else eval "echo \$${1}_$2"; fi; }
