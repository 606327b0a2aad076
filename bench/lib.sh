# Shared by the bench scripts (sourced, not run): installing a peer, a
# work directory whose processes are stopped on exit, refusing a port a
# stranger holds, and waiting for an HTTP endpoint.

# need COMMAND PACKAGE: install the Debian package when the command is missing.
need() {
  command -v "$1" >/dev/null 2>&1 && return
  echo "installing $2"
  apt-get install -y -qq "$2" >/dev/null 2>&1 \
    || { apt-get update -qq >/dev/null && apt-get install -y -qq "$2" >/dev/null; }
}

die() { echo "error: $*" >&2; exit 1; }

# kill_tree PID: the process and all its descendants (nginx workers,
# subshell loops running wrk or h2load...).
kill_tree() {
  local p=$1 c
  for c in $(pgrep -P "$p" 2>/dev/null || true); do kill_tree "$c"; done
  kill "$p" 2>/dev/null || true
}

# WORK: a scratch directory; PIDS: processes started into it. On exit both
# go (KEEP_WORK=1 keeps the directory for a look).
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  local p kids=()
  for p in "${PIDS[@]}"; do kids+=($(pgrep -P "$p" 2>/dev/null || true)); done
  for p in "${PIDS[@]}"; do kill_tree "$p"; done
  for _ in $(seq 30); do
    local alive=0
    for p in "${PIDS[@]}" "${kids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  for p in "${PIDS[@]}" "${kids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  if [ "${KEEP_WORK:-0}" = 1 ]; then echo "work dir kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

# tcp_free PORT HINT / udp_free PORT HINT: refuse to start when a stranger
# holds the port (it would be measured in place of ours).
tcp_free() {
  if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
    die "127.0.0.1:$1 (tcp) is already in use; set $2"
  fi
}
udp_free() {
  python3 -c "import socket,sys; s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.bind(('127.0.0.1',int(sys.argv[1])))" \
    "$1" 2>/dev/null || die "127.0.0.1:$1 (udp) is already in use; set $2"
}

# wait_http URL PID SECONDS -> 0 once URL answers 200, 1 on timeout or exit
wait_http() {
  local url=$1 pid=$2 secs=$3 i
  for i in $(seq $((secs * 20))); do
    kill -0 "$pid" 2>/dev/null || return 1
    [ "$(curl -sk -o /dev/null -m 1 -w '%{http_code}' "$url" 2>/dev/null || true)" = 200 ] && return 0
    sleep 0.05
  done
  return 1
}

# build_gateway_and_h3load GATEWAY_BIN H3LOAD_BIN: cargo build --release of
# the gateway and examples/h3load, unless REBUILD=0 and both exist.
build_gateway_and_h3load() {
  if [ -x "$1" ] && [ -x "$2" ] && [ "${REBUILD:-1}" = 0 ]; then return; fi
  echo "building the gateway and h3load (cargo build --release)"
  cargo build --release -q --bin expressgateway --example h3load >"$WORK/build.log" 2>&1 \
    || { tail -n 20 "$WORK/build.log" >&2; die "cargo build --release failed"; }
}

# leaf_cert: $WORK/cert.pem and key.pem (0600) for localhost and 127.0.0.1.
# CA:FALSE: h3load (rustls/webpki) trusts this certificate directly and
# refuses a CA certificate as the server's own (CaUsedAsEndEntity).
leaf_cert() {
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$WORK/key.pem" -out "$WORK/cert.pem" -days 2 -subj /CN=localhost \
    -addext subjectAltName=IP:127.0.0.1,DNS:localhost \
    -addext basicConstraints=critical,CA:FALSE >/dev/null 2>&1
  chmod 600 "$WORK/key.pem"
}

# nginx_common DIR / nginx_http_common DIR: the config lines every nginx of
# the benches shares, outside and inside `http {}`. Debian's build points
# temp dirs at /var/lib/nginx: keep them in DIR. keepalive_requests is far
# above nginx's 1000, so no run measures reconnects.
nginx_common() {
  local dir=$1
  [ "$(id -u)" = 0 ] && echo "user root;"
  cat <<CFG
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 4096; }
CFG
}
nginx_http_common() {
  local dir=$1
  cat <<CFG
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    client_max_body_size 16m;
    client_body_temp_path $dir/body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
CFG
}

# ORIGIN_BODY: the ~100-byte answer of every bench origin's `/`.
ORIGIN_BODY="hello from the expressgateway bench origin; this body is padded to about one hundred bytes....."

# start_origin PORT SERVERS: a one-worker nginx in $WORK/origin serving the
# `server { }` blocks SERVERS; waits for 200 on http://127.0.0.1:PORT/ and
# sets ORIGIN_PID.
start_origin() {
  local port=$1 servers=$2 dir="$WORK/origin"
  mkdir -p "$dir"
  {
    echo "daemon off; master_process off; worker_processes 1;"
    nginx_common "$dir"
    echo "http {"
    nginx_http_common "$dir"
    echo "$servers"
    echo "}"
  } > "$dir/nginx.conf"
  nginx -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf" >/dev/null 2>&1 &
  ORIGIN_PID=$!; PIDS+=("$ORIGIN_PID")
  wait_http "http://127.0.0.1:$port/" "$ORIGIN_PID" 10 \
    || { cat "$dir/error.log" >&2 || true; die "origin nginx did not start"; }
}
