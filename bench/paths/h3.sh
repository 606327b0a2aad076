# Path h3: HTTP/3 -> proxy -> HTTP/1.1 origin (sourced by run.sh): caddy
# (the one Debian peer that serves HTTP/3 in front of an H1 origin;
# GOMAXPROCS = PROXY_WORKERS) and the gateway's `quic` listener, both loaded
# with examples/h3load -t1 -c CONNS -m STREAMS. Case h2ref: the gateway's
# own HTTP/2 over TLS (h2load) at the same shape, which the H3 goal compares
# with. half: h3load --rps (total over the connections) at half of the
# lowest max req/s of the two, offered to both.
need caddy caddy
need h2load nghttp2-client
[ -x "$H3LOAD_BIN" ] || die "$H3LOAD_BIN missing (REBUILD=0 with no build?)"
H3_SHAPE=(-t1 -c "${CONNS:-8}" -m "${STREAMS:-10}")
ORIGIN_PORT=$((PATH_BASE + 1)); GATEWAY_TLS=$((PATH_BASE + 2)); GATEWAY_QUIC=$((PATH_BASE + 3))
CADDY_PORT=$((PATH_BASE + 4))
for port in $ORIGIN_PORT $GATEWAY_TLS $CADDY_PORT; do tcp_free "$port" BENCH_BASE_PORT; done
for port in $GATEWAY_QUIC $CADDY_PORT; do udp_free "$port" BENCH_BASE_PORT; done
leaf_cert
bench_origin "$ORIGIN_PORT"

{ gateway_runtime
  gateway_listener h1s "$GATEWAY_TLS" "$ORIGIN_PORT" h1
  gateway_listener quic "$GATEWAY_QUIC" "$ORIGIN_PORT" h1
} >"$WORK/gateway.toml"
start_gateway gateway
PID_gateway=$LAST_PID

# Caddy: TLS on the bench certificate (no ACME), HTTP/1.1, 2 and 3 on one
# port (TCP and UDP), no admin endpoint, no access log (its default); an
# idle pool above the requests in flight (its default keeps 32 per host).
cat >"$WORK/Caddyfile" <<CFG
{
	admin off
	auto_https off
	servers {
		protocols h1 h2 h3
	}
}
https://:$CADDY_PORT {
	tls $WORK/cert.pem $WORK/key.pem
	reverse_proxy 127.0.0.1:$ORIGIN_PORT {
		transport http {
			keepalive_idle_conns_per_host 256
		}
	}
}
CFG
HOME=$WORK XDG_DATA_HOME=$WORK XDG_CONFIG_HOME=$WORK GOMAXPROCS=$PROXY_WORKERS \
  on_proxy caddy run --config "$WORK/Caddyfile" --adapter caddyfile >"$WORK/caddy.log" 2>&1 &
PID_caddy=$!; PIDS+=("$PID_caddy")

ready_http "https://127.0.0.1:$GATEWAY_TLS/" "$PID_gateway" "$WORK/gateway.log" gateway
ready_h3 "127.0.0.1:$GATEWAY_QUIC" "$PID_gateway" "$WORK/gateway.log" gateway
ready_h3 "127.0.0.1:$CADDY_PORT" "$PID_caddy" "$WORK/caddy.log" caddy

h3load_case max caddy "$PID_caddy" "127.0.0.1:$CADDY_PORT" "${H3_SHAPE[@]}"
h3load_case max gateway "$PID_gateway" "127.0.0.1:$GATEWAY_QUIC" "${H3_SHAPE[@]}"
half=$(( $(lowest_rate max) / 2 ))
if [ "$half" -gt 0 ]; then
  h3load_case half caddy "$PID_caddy" "127.0.0.1:$CADDY_PORT" "${H3_SHAPE[@]}" --rps "$half"
  h3load_case half gateway "$PID_gateway" "127.0.0.1:$GATEWAY_QUIC" "${H3_SHAPE[@]}" --rps "$half"
fi
WANT_ALPN=h2
h2load_case h2ref gateway "$PID_gateway" "https://127.0.0.1:$GATEWAY_TLS/" "${H3_SHAPE[@]}"
