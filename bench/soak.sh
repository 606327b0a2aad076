#!/usr/bin/env bash
# Soak: the gateway under mixed H1/H2/H3 traffic, the attacks of SPEC §9
# and a SIGHUP every 10 s, for SOAK_MINUTES; one report line every
# REPORT_SECONDS (RSS, open fds, tasks, connections, requests by code class,
# defence trips, reloads, load-tool errors). Fails when RSS or open fds grew
# after warm-up, or when the gateway died (loopback only).
#
#   bash bench/soak.sh                      # 30 minutes
#   QUICK=1 REBUILD=0 bash bench/soak.sh    # 2 minutes, a line every 10 s
#
# Origin: one nginx (1 worker, two ports = two backends), `return 200` with a
# ~100-byte body, /big = a 64 MiB file (for slow readers), /upload = 200.
# Gateway (worker_threads 2) with listeners h1 (H1 + h2c), h1s (TLS, ALPN
# h2/http1.1) and quic (HTTP/3), all on the same certificate, the admin
# listener on loopback; short timeouts so each attack resolves in seconds.
# Every 10 s the config file flips between two valid versions (the backend
# weights swap) and the gateway gets SIGHUP, so every reload really applies.
# Traffic, all at once, each bounded by the soak's end, new connections
# every burst:
#   H1:  wrk -t1 -c16, paced (10 ms between requests per connection), 20 s runs
#   H2:  h2load -c4 -m10 --rps 50 over TLS and over h2c, 20 s runs
#   H3:  target/release/examples/h3load -c2 -m1, 2 s bursts every 6 s
# Attacks, each in its own loop, every run bounded by `timeout`:
#   slowloris (slowhttptest -H), silent connections (h1 and h1s), slow
#   readers of /big (H1, TLS H1, h2c with no WINDOW_UPDATE, H3 with no stream
#   credit: crates/expressgateway/tests/e2e/py/h3_stalled_reader.py),
#   aborted and stalled uploads, HTTP/2 PING / SETTINGS floods and rapid
#   reset, idle keep-alive connections left open (bench/soak_attacks.py).
# Samples: VmRSS from /proc/PID/status, entries of /proc/PID/fd, and from
# /metrics runtime_tasks_alive, connections_active, http_requests_total,
# defence_trips_total, config_reloads_total.
# Verdict: baseline = median of the first SMOOTH samples at or after
# WARMUP_SECONDS, final = median of the last SMOOTH samples (attacks make
# single samples noisy); fail if final RSS > baseline + MAX_RSS_GROWTH_MB,
# final fds > baseline + MAX_FD_GROWTH, or the gateway is gone. Traffic and
# attacks run 20 s past the last sample, so the last samples see the whole
# mix. Then, once the client connections have drained and one more SIGHUP
# has dropped the old pools (with their idle upstream connections), a last
# sample is compared with the idle gateway before the load: more than
# MAX_FD_GROWTH extra fds fails too (leaked sockets show up plainly there).
#
# Knobs: SOAK_MINUTES (30), QUICK=1 (2 minutes, REPORT_SECONDS 10,
# WARMUP_SECONDS 30), REPORT_SECONDS (30), WARMUP_SECONDS (120),
# MAX_RSS_GROWTH_MB (64), MAX_FD_GROWTH (64), SMOOTH (3), SOAK_BASE_PORT
# (25600; uses base+1..base+6, base+5 over UDP), REBUILD=0 (skip `cargo build
# --release` of the gateway and h3load when both exist). Binaries are taken
# from $CARGO_TARGET_DIR/release (default target/release). KEEP_WORK=1 keeps
# the temp dir (configs, gateway log, per-attack JSON lines) for a post-mortem.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh

if [ "${QUICK:-0}" = 1 ]; then
  DURATION=$(( ${SOAK_MINUTES:-2} * 60 ))
  REPORT=${REPORT_SECONDS:-10}
  WARMUP=${WARMUP_SECONDS:-30}
else
  DURATION=$(( ${SOAK_MINUTES:-30} * 60 ))
  REPORT=${REPORT_SECONDS:-30}
  WARMUP=${WARMUP_SECONDS:-120}
fi
MAX_RSS_MB=${MAX_RSS_GROWTH_MB:-64}
MAX_FDS=${MAX_FD_GROWTH:-64}
SMOOTH=${SMOOTH:-3}
HUP_EVERY=10
BASE=${SOAK_BASE_PORT:-25600}
ORIGIN1=$((BASE + 1)); ORIGIN2=$((BASE + 2))
GW_H1=$((BASE + 3)); GW_TLS=$((BASE + 4)); GW_QUIC=$((BASE + 5)); GW_ADMIN=$((BASE + 6))
TARGET_DIR=${CARGO_TARGET_DIR:-target}
GATEWAY_BIN=$TARGET_DIR/release/expressgateway
H3LOAD_BIN=$TARGET_DIR/release/examples/h3load
ATTACKS=bench/soak_attacks.py
H3_STALLED=crates/expressgateway/tests/e2e/py/h3_stalled_reader.py
# Gateway timeouts (ms), short so that attacks end within seconds.
HEADER_MS=3000; BODY_MS=4000; IDLE_MS=8000; HANDSHAKE_MS=3000

[ "$WARMUP" -lt "$DURATION" ] || { echo "error: WARMUP_SECONDS ($WARMUP) must be below the soak duration (${DURATION}s)" >&2; exit 1; }

need nginx nginx
need wrk wrk
need h2load nghttp2-client
need slowhttptest slowhttptest
need curl curl
need openssl openssl
need python3 python3
need timeout coreutils
python3 -c 'import h2' 2>/dev/null || {
  echo "installing python3-h2"
  apt-get install -y -qq python3-h2 >/dev/null 2>&1 \
    || pip install -q h2 >/dev/null 2>&1 || pip install -q --break-system-packages h2 >/dev/null
}
H3_ATTACK=1
python3 -c 'import aioquic' 2>/dev/null || {
  apt-get install -y -qq python3-aioquic >/dev/null 2>&1 \
    || pip install -q aioquic >/dev/null 2>&1 || pip install -q --break-system-packages aioquic >/dev/null 2>&1 \
    || { H3_ATTACK=0; echo "warning: no aioquic; the H3 slow reader is skipped"; }
}



# Refuse to start if a port is taken: a stranger answering there would be
# soaked in place of the gateway.
for port in "$ORIGIN1" "$ORIGIN2" "$GW_H1" "$GW_TLS" "$GW_ADMIN"; do tcp_free "$port" SOAK_BASE_PORT; done
udp_free "$GW_QUIC" SOAK_BASE_PORT


# ---------------------------------------------------------------- build --
build_gateway_and_h3load "$GATEWAY_BIN" "$H3LOAD_BIN"

# ---------------------------------------------------------------- cert ---
leaf_cert

# --------------------------------------------------------------- origin --
mkdir -p "$WORK/origin/www"
# Sparse: 64 MiB of zeros that cost no disk.
truncate -s 64M "$WORK/origin/www/big"
start_origin "$ORIGIN1" "    server {
        listen 127.0.0.1:$ORIGIN1;
        listen 127.0.0.1:$ORIGIN2;
        root $WORK/origin/www;
        location / { default_type text/plain; return 200 \"$ORIGIN_BODY\\n\"; }
        location = /big { default_type application/octet-stream; }
        location = /upload { default_type text/plain; return 200 \"ok\\n\"; }
    }"
wait_http "http://127.0.0.1:$ORIGIN2/" "$ORIGIN_PID" 2 \
  || { cat "$WORK/origin/error.log" >&2 || true; die "origin nginx did not start"; }

# -------------------------------------------------------------- gateway --
# gateway_config W1 W2 -> the whole file; the two versions differ only in
# the backend weights, so each SIGHUP applies a real change.
gateway_config() {
  local w1=$1 w2=$2 name proto
  cat <<CFG
[runtime]
worker_threads = 2
max_keepalive_requests = 1000000
max_requests_per_h3_connection = 1000000
per_ip_connection_cap = 4096
handshake_timeout_ms = $HANDSHAKE_MS
# Stop quickly at the end (SIGTERM drains for this long).
drain_timeout_ms = 1000
readiness_settle_ms = 0

[observability]
metrics_bind = "127.0.0.1:$GW_ADMIN"
access_log = "off"
CFG
  for name in h1 h1s quic; do
    cat <<CFG

[[listeners]]
name = "soak-$name"
address = "127.0.0.1:$( case $name in h1) echo "$GW_H1" ;; h1s) echo "$GW_TLS" ;; quic) echo "$GW_QUIC" ;; esac )"
protocol = "$name"
lb_policy = "weighted_round_robin"
[listeners.http]
header_timeout_ms = $HEADER_MS
body_timeout_ms = $BODY_MS
total_timeout_ms = 60000
head_timeout_ms = 10000
idle_timeout_ms = $IDLE_MS
max_inflight_requests = 4096
max_response_body_bytes = 134217728
[listeners.circuit_breaker]
max_connections = 512
max_requests = 2048
max_pending_requests = 512
CFG
    case $name in
      h1s) printf '[listeners.tls]\ncert_path = "%s"\nkey_path = "%s"\n' "$WORK/cert.pem" "$WORK/key.pem" ;;
      quic) printf '[listeners.quic]\ncert_path = "%s"\nkey_path = "%s"\nretry = "never"\nmax_idle_timeout_ms = %s\n' \
              "$WORK/cert.pem" "$WORK/key.pem" "$IDLE_MS" ;;
    esac
    cat <<CFG
[[listeners.backends]]
address = "127.0.0.1:$ORIGIN1"
protocol = "h1"
weight = $w1
[[listeners.backends]]
address = "127.0.0.1:$ORIGIN2"
protocol = "h1"
weight = $w2
CFG
  done
}
gateway_config 1 2 > "$WORK/gateway-a.toml"
gateway_config 2 1 > "$WORK/gateway-b.toml"
cp "$WORK/gateway-a.toml" "$WORK/gateway.toml"
for f in gateway-a gateway-b; do
  "$GATEWAY_BIN" check "$WORK/$f.toml" >"$WORK/check.log" 2>&1 \
    || { cat "$WORK/check.log" >&2; die "$GATEWAY_BIN check $f.toml failed"; }
done

NO_COLOR=1 RUST_LOG=warn "$GATEWAY_BIN" "$WORK/gateway.toml" >"$WORK/gateway.out" 2>"$WORK/gateway.log" &
GATEWAY_PID=$!; PIDS+=("$GATEWAY_PID")
gateway_died() {
  local rc
  wait "$GATEWAY_PID" 2>/dev/null && rc=0 || rc=$?
  echo "gateway exited with status $rc; last log lines:" >&2
  grep -v '^\s*$' "$WORK/gateway.log" | tail -n 20 | cut -c1-300 >&2 || true
}
for _ in $(seq 100); do
  grep -q '"event":"ready"' "$WORK/gateway.out" 2>/dev/null && break
  kill -0 "$GATEWAY_PID" 2>/dev/null || { gateway_died; die "the gateway did not start"; }
  sleep 0.1
done
grep -q '"event":"ready"' "$WORK/gateway.out" || die "no \"ready\" line from the gateway within 10 s"
wait_http "http://127.0.0.1:$GW_H1/" "$GATEWAY_PID" 5 || die "gateway h1: no 200 on :$GW_H1"
wait_http "https://127.0.0.1:$GW_TLS/" "$GATEWAY_PID" 5 || die "gateway h1s: no 200 on :$GW_TLS"
wait_http "http://127.0.0.1:$GW_ADMIN/livez" "$GATEWAY_PID" 5 || die "gateway admin: no 200 on :$GW_ADMIN/livez"
"$H3LOAD_BIN" "127.0.0.1:$GW_QUIC" --ca "$WORK/cert.pem" --single 1 -n 0 --timeout 2 -t 1 \
  >"$WORK/h3probe.txt" 2>&1 || die "gateway quic: no HTTP/3 answer: $(tail -n1 "$WORK/h3probe.txt" | cut -c1-300)"

# ------------------------------------------------------------- sampling --
scrape() { curl -s -m 2 "http://127.0.0.1:$GW_ADMIN/metrics" >"$WORK/metrics.txt" 2>/dev/null || : >"$WORK/metrics.txt"; }
# metric NAME -> the sum of every series of NAME (0 if absent)
metric() { awk -v m="$1" 'index($0, m "{") == 1 || $1 == m {n += $NF} END {printf "%d", n}' "$WORK/metrics.txt"; }
# metric_by NAME LABEL -> "value=count ..." per value of LABEL
metric_by() {
  awk -v m="$1" -v l="$2" 'index($0, m "{") == 1 {
      v = "?"; if (match($0, l "=\"[^\"]*\"")) v = substr($0, RSTART + length(l) + 2, RLENGTH - length(l) - 3)
      n[v] += $NF }
    END { for (k in n) printf "%s=%d\n", k, n[k] }' "$WORK/metrics.txt" | sort | tr '\n' ' ' | sed 's/ $//'
}
HZ=$(getconf CLK_TCK)
# cpu_ticks -> the gateway's utime+stime; the comm field may hold spaces,
# so count fields after its closing parenthesis (utime, stime = 12, 13).
cpu_ticks() { sed 's/.*) //' "/proc/$GATEWAY_PID/stat" 2>/dev/null | awk '{print $12 + $13}' || echo 0; }
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$GATEWAY_PID/status" 2>/dev/null || echo 0; }
fds() { ls "/proc/$GATEWAY_PID/fd" 2>/dev/null | wc -l; }
# errs TOOL -> "requests/errors" summed over the runs of TOOL finished so far
errs() { awk '{r += $1; e += $2} END {printf "%d/%d", r, e}' "$WORK/stats/$1" 2>/dev/null || echo 0/0; }

LAST_TICKS=0; LAST_AT=0
sample() {
  local now=$1 tag=$2 rss fd ticks cpu
  scrape
  rss=$(rss_kb); fd=$(fds); ticks=$(cpu_ticks)
  cpu=$(awk -v d=$((ticks - LAST_TICKS)) -v t=$((now - LAST_AT)) -v hz="$HZ" 'BEGIN{ if (t > 0) printf "%.0f%%", d / hz / t * 100; else print "-" }')
  LAST_TICKS=$ticks; LAST_AT=$now
  local tasks conns codes trips rok rall
  tasks=$(metric expressgateway_runtime_tasks_alive)
  conns=$(metric expressgateway_connections_active)
  codes=$(metric_by expressgateway_http_requests_total code_class)
  trips=$(metric expressgateway_defence_trips_total)
  rok=$(awk 'index($0, "expressgateway_config_reloads_total{") == 1 && /result="ok"/ {n += $NF} END {printf "%d", n}' "$WORK/metrics.txt")
  rall=$(metric expressgateway_config_reloads_total)
  printf "t=%5ss%s cpu=%4s rss=%6.1fMB fds=%5s tasks=%5s conns=%4s req[%s] trips=%s reloads=%s/%s wrk=%s h2=%s h2c=%s h3=%s\n" \
    "$((now - START))" "$tag" "$cpu" "$(awk -v k="$rss" 'BEGIN{print k / 1024}')" "$fd" "$tasks" "$conns" "${codes:-none}" "$trips" \
    "$rok" "$((rall - rok))" "$(errs wrk)" "$(errs h2)" "$(errs h2c)" "$(errs h3)"
  LAST_RSS=$rss; LAST_FD=$fd; LAST_TASKS=$tasks; LAST_CONNS=$conns
}

# ---------------------------------------------------------------- load ---
mkdir -p "$WORK/stats" "$WORK/attacks"
: >"$WORK/stats/wrk"; : >"$WORK/stats/h2"; : >"$WORK/stats/h2c"; : >"$WORK/stats/h3"
# Traffic and attacks go on TAIL seconds past END, so that the last samples
# (taken up to END) see the full mix and not loops winding down.
TAIL=20
START=$(date +%s); END=$((START + DURATION)); LOAD_END=$((END + TAIL))
left() { echo $((LOAD_END - $(date +%s))); }
cat > "$WORK/pace.lua" <<'LUA'
-- 10 ms between requests on each connection: a steady, moderate load.
function delay() return 10 end
LUA

load_wrk() {
  local d out
  while [ "$(left)" -gt 2 ]; do
    d=$(left); [ "$d" -gt 20 ] && d=20
    out=$(wrk -t1 -c16 -d"${d}s" -s "$WORK/pace.lua" "http://127.0.0.1:$GW_H1/" 2>&1) || true
    awk '/requests in/ {r = $1} /Non-2xx/ {e += $NF}
         /Socket errors/ {gsub(/,/, ""); e += $4 + $6 + $8 + $10}
         END {print r + 0, e + 0}' <<<"$out" >>"$WORK/stats/wrk"
    grep -q 'requests in' <<<"$out" || { echo "$out" | tail -n 3 >"$WORK/stats/wrk.last"; sleep 1; }
  done
}
# load_h2load NAME URL
load_h2load() {
  local name=$1 url=$2 d out
  while [ "$(left)" -gt 2 ]; do
    d=$(left); [ "$d" -gt 20 ] && d=20
    out=$(h2load -c4 -m10 -t1 --rps 50 -D "$d" "$url" 2>&1) || true
    # requests: N total, N started, N done, N succeeded, N failed, N errored, N timeout
    # status codes: N 2xx, N 3xx, N 4xx, N 5xx
    awk '/^requests:/ {r = $8; e += $10} /^status codes:/ {e += $7 + $9} END {print r + 0, e + 0}' \
      <<<"$out" >>"$WORK/stats/$name"
    grep -q '^requests:' <<<"$out" || { echo "$out" | tail -n 3 >"$WORK/stats/$name.last"; sleep 1; }
  done
}
load_h3() {
  local d f=$WORK/stats/h3.out
  while [ "$(left)" -gt 2 ]; do
    d=$(left); [ "$d" -gt 2 ] && d=2
    "$H3LOAD_BIN" "127.0.0.1:$GW_QUIC" --ca "$WORK/cert.pem" --single 0 -c 2 -m 1 -t 1 \
      -d "$d" --timeout 5 >"$f" 2>&1 || true
    awk '/^RESULT / { for (i = 2; i <= NF; i++) { split($i, a, "="); v[a[1]] = a[2] } }
         END {print v["requests"] + 0, v["errors"] + v["non_2xx"]}' "$f" >>"$WORK/stats/h3"
    grep -q '^first error:' "$f" && grep -m1 '^first error:' "$f" >"$WORK/stats/h3.last"
    grep -q '^RESULT ' "$f" || tail -n 3 "$f" >"$WORK/stats/h3.last"
    [ "$(left)" -gt 6 ] && sleep 4
  done
}

# ------------------------------------------------------------- attacks ---
# attack_loop NAME HOLD PAUSE CMD... : run CMD (bounded by HOLD + 10 s)
# again and again while a whole run still fits before the end; every JSON
# line goes to attacks/NAME.
attack_loop() {
  local name=$1 hold=$2 pause=$3; shift 3
  while [ "$(left)" -gt $((hold + 2)) ]; do
    if [ "$(type -t "$1")" = function ]; then
      "$@" >>"$WORK/attacks/$name" 2>>"$WORK/attacks/$name.err" || true   # bounds itself
    else
      timeout -k 2 $((hold + 10)) "$@" >>"$WORK/attacks/$name" 2>>"$WORK/attacks/$name.err" || true
    fi
    [ "$(left)" -gt $((pause + 2)) ] && sleep "$pause"
  done
}
# slowloris with slowhttptest: 30 connections trickling a header line every
# 2 s (it gives up after 10 s, or once the gateway closed them all); the
# gateway must cut each at header_timeout (3 s). Its CSV: seconds, closed,
# pending, connected, service available.
slowloris() {
  rm -f "$WORK/slowloris.csv"
  timeout -k 2 20 slowhttptest -H -c 30 -r 30 -i 2 -l 10 -x 8 -p 3 -g -o "$WORK/slowloris" \
    -u "http://127.0.0.1:$GW_H1/" >"$WORK/slowloris.out" 2>&1 || true
  # It samples once a second and stops early, with "No open connections
  # left", when the gateway has closed them all: then all were closed.
  local all=0
  grep -q 'No open connections left' "$WORK/slowloris.out" && all=1
  awk -F, -v all="$all" 'NR > 1 {if ($4 > c) c = $4; closed = $2; s = $1}
    END {if (all) closed = c
      printf "{\"mode\": \"slowloris\", \"max_connected\": %d, \"closed\": %d, \"open\": %d, \"ended_s\": %d}\n", c, closed, c - closed, s}' \
    "$WORK/slowloris.csv" 2>/dev/null || echo '{"mode": "slowloris", "error": "no slowhttptest report"}'
}
h2_floods() {
  local mode
  for mode in ping-flood settings-flood rapid-reset; do
    timeout -k 2 15 python3 "$ATTACKS" "$mode" --port "$GW_H1" --count 10000 --hold 5 || true
  done
}
S_HOLD=$(( (HEADER_MS + HANDSHAKE_MS) / 1000 + 3 ))
B_HOLD=$(( BODY_MS / 1000 + 5 ))
I_HOLD=$(( IDLE_MS / 1000 + 4 ))

# The idle gateway, before any load: the drained sample is compared with it.
LAST_AT=$((START - 1)); LAST_TICKS=$(cpu_ticks)
START_LINE=$(sample "$START" "i")
scrape; START_FD=$(fds); START_TASKS=$(metric expressgateway_runtime_tasks_alive); START_RSS=$(rss_kb)
LAST_AT=$START; LAST_TICKS=$(cpu_ticks)

start_bg() { "$@" & PIDS+=("$!"); }
start_bg load_wrk
start_bg load_h2load h2 "https://127.0.0.1:$GW_TLS/"
start_bg load_h2load h2c "http://127.0.0.1:$GW_H1/"
start_bg load_h3
start_bg attack_loop slowloris 12 2 slowloris
start_bg attack_loop silent-h1 "$S_HOLD" 2 python3 "$ATTACKS" silent --port "$GW_H1" --count 20 --hold "$S_HOLD"
start_bg attack_loop silent-h1s "$S_HOLD" 2 python3 "$ATTACKS" silent --port "$GW_TLS" --count 20 --hold "$S_HOLD"
start_bg attack_loop slow-reader-h1 "$B_HOLD" 2 python3 "$ATTACKS" slow-reader --port "$GW_H1" --path /big --count 4 --hold "$B_HOLD"
start_bg attack_loop slow-reader-h1s "$B_HOLD" 2 python3 "$ATTACKS" slow-reader --port "$GW_TLS" --tls --path /big --count 2 --hold "$B_HOLD"
start_bg attack_loop slow-reader-h2c "$B_HOLD" 2 python3 "$ATTACKS" h2-slow-reader --port "$GW_H1" --path /big --hold "$B_HOLD"
if [ "$H3_ATTACK" = 1 ]; then
  start_bg attack_loop slow-reader-h3 "$B_HOLD" 2 python3 "$H3_STALLED" --ca "$WORK/cert.pem" --port "$GW_QUIC" --path /big --timeout "$B_HOLD"
fi
start_bg attack_loop aborted-upload 5 1 python3 "$ATTACKS" aborted-upload --port "$GW_H1" --count 10 --hold 5
start_bg attack_loop stalled-upload "$B_HOLD" 2 python3 "$ATTACKS" stalled-upload --port "$GW_H1" --count 4 --hold "$B_HOLD"
start_bg attack_loop h2-floods 15 2 h2_floods
start_bg attack_loop idle-keepalive "$I_HOLD" 1 python3 "$ATTACKS" idle-keepalive --port "$GW_H1" --count 30 --hold "$I_HOLD"
LOOP_PIDS=("${PIDS[@]:2}")

# ----------------------------------------------------------- main loop ---
echo "soak: ${DURATION}s, report every ${REPORT}s, warm-up ${WARMUP}s, SIGHUP every ${HUP_EVERY}s; $(nproc) cores, loopback"
echo "gateway pid $GATEWAY_PID ($GATEWAY_BIN); listeners h1 :$GW_H1 (H1 + h2c), h1s :$GW_TLS, quic :$GW_QUIC (udp), admin :$GW_ADMIN"
echo "fail if after warm-up RSS grows > ${MAX_RSS_MB} MB or fds > ${MAX_FDS} (median of ${SMOOTH} samples, first vs last),"
echo "or if the drained gateway holds > ${MAX_FDS} fds more than the idle one before the load"
echo "columns: gateway cpu (100% = one core, since the last line), rss MB, fds, tasks alive, client connections,"
echo "         requests by code class, defence trips, reloads ok/other, load tools requests/errors (runs finished so far)"
echo "         (w = warm-up, i = idle before the load, d = drained after it)"
echo "$START_LINE"
S_T=(); S_RSS=(); S_FD=(); S_TASKS=()
DIED=0; HUPS=0; NEXT_HUP=$((START + HUP_EVERY)); NEXT_REPORT=$((START + REPORT)); FLIP=0
while :; do
  now=$(date +%s)
  if ! kill -0 "$GATEWAY_PID" 2>/dev/null; then DIED=1; break; fi
  if [ "$now" -ge "$NEXT_HUP" ] && [ "$now" -lt "$END" ]; then
    FLIP=$((1 - FLIP))
    if [ "$FLIP" = 1 ]; then src=gateway-b; else src=gateway-a; fi
    cp "$WORK/$src.toml" "$WORK/gateway.toml.new" && mv -f "$WORK/gateway.toml.new" "$WORK/gateway.toml"
    kill -HUP "$GATEWAY_PID" 2>/dev/null || true
    HUPS=$((HUPS + 1)); NEXT_HUP=$((NEXT_HUP + HUP_EVERY))
  fi
  if [ "$now" -ge "$NEXT_REPORT" ]; then
    tag=" "; [ $((now - START)) -lt "$WARMUP" ] && tag="w"
    sample "$now" "$tag"
    if [ "$tag" = " " ]; then
      S_T+=("$((now - START))"); S_RSS+=("$LAST_RSS"); S_FD+=("$LAST_FD"); S_TASKS+=("$LAST_TASKS")
    fi
    NEXT_REPORT=$((NEXT_REPORT + REPORT))
  fi
  [ "$now" -ge "$END" ] && break
  sleep 0.5
done

# ------------------------------------------------------------- wind-down --
# Every loop is bounded by END; give the last runs their slack, then stop.
for _ in $(seq $(( (TAIL + 20) * 2 ))); do
  alive=0
  for p in "${LOOP_PIDS[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
  [ "$alive" = 0 ] && break
  sleep 0.5
done
for p in "${LOOP_PIDS[@]}"; do kill_tree "$p"; done
if [ "$DIED" = 0 ] && kill -0 "$GATEWAY_PID" 2>/dev/null; then
  # Drained: wait for the client connections to go (idle timeout at most).
  for _ in $(seq $(( (IDLE_MS / 1000 + 10) * 2 ))); do
    scrape; [ "$(metric expressgateway_connections_active)" = 0 ] && break
    sleep 0.5
  done
  # One more reload: the running snapshot's pools (and their idle upstream
  # keep-alive connections, kept up to 50 s) are dropped once no client
  # connection holds them, so the drained gateway should fall back to about
  # its idle fds and tasks before the load.
  cp "$WORK/gateway-a.toml" "$WORK/gateway.toml.new" && mv -f "$WORK/gateway.toml.new" "$WORK/gateway.toml"
  kill -HUP "$GATEWAY_PID" 2>/dev/null || true; HUPS=$((HUPS + 1))
  for _ in $(seq 10); do
    sleep 0.5; [ "$(fds)" -le $((START_FD + 2)) ] && break
  done
  echo "after the load stopped, the connections drained and one more SIGHUP:"
  sample "$(date +%s)" "d"
  IDLE_LINE="rss $(awk -v k="$LAST_RSS" 'BEGIN{printf "%.1f", k / 1024}') MB, fds $LAST_FD, tasks $LAST_TASKS, connections $LAST_CONNS"
  IDLE_LINE+=" (idle before the load: rss $(awk -v k="$START_RSS" 'BEGIN{printf "%.1f", k / 1024}') MB, fds $START_FD, tasks $START_TASKS)"
  [ $((LAST_FD - START_FD)) -gt "$MAX_FDS" ] && FAIL_DRAIN="drained gateway holds $((LAST_FD - START_FD)) fds more than before the load (> ${MAX_FDS})"
  [ "$LAST_CONNS" != 0 ] && echo "  note: $LAST_CONNS client connections still open $(( IDLE_MS / 1000 + 10 )) s after the load stopped"
else
  DIED=1
fi

# --------------------------------------------------------------- verdict --
echo
echo "summary"
# median VALUES... -> the middle value (lower middle for an even count)
median() { printf '%s\n' "$@" | sort -n | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }
mb() { awk -v k="$1" 'BEGIN{printf "%.1f", k / 1024}'; }
FAIL=()
[ -n "${FAIL_DRAIN:-}" ] && FAIL+=("$FAIL_DRAIN")
n=${#S_RSS[@]}
if [ "$n" -lt 2 ]; then
  echo "  too few samples after warm-up ($n) to judge growth"
  FAIL+=("fewer than 2 samples after warm-up")
else
  k=$SMOOTH; [ "$k" -gt $((n / 2)) ] && k=$((n / 2)); [ "$k" -lt 1 ] && k=1
  b_rss=$(median "${S_RSS[@]:0:k}"); f_rss=$(median "${S_RSS[@]:n-k:k}")
  b_fd=$(median "${S_FD[@]:0:k}"); f_fd=$(median "${S_FD[@]:n-k:k}")
  b_tk=$(median "${S_TASKS[@]:0:k}"); f_tk=$(median "${S_TASKS[@]:n-k:k}")
  min_rss=$(printf '%s\n' "${S_RSS[@]}" | sort -n | head -n1); max_rss=$(printf '%s\n' "${S_RSS[@]}" | sort -n | tail -n1)
  min_fd=$(printf '%s\n' "${S_FD[@]}" | sort -n | head -n1); max_fd=$(printf '%s\n' "${S_FD[@]}" | sort -n | tail -n1)
  echo "  samples after warm-up: $n (t=${S_T[0]}s..${S_T[n-1]}s), baseline/final = median of the first/last $k"
  echo "  rss MB: baseline $(mb "$b_rss"), final $(mb "$f_rss"), min $(mb "$min_rss"), max $(mb "$max_rss"), last $(mb "${S_RSS[n-1]}");" \
    "growth $(awk -v a="$b_rss" -v b="$f_rss" 'BEGIN{printf "%+.1f", (b - a) / 1024}') MB (limit ${MAX_RSS_MB})"
  echo "  fds: baseline $b_fd, final $f_fd, min $min_fd, max $max_fd, last ${S_FD[n-1]}; growth $((f_fd - b_fd)) (limit ${MAX_FDS})"
  echo "  tasks alive: baseline $b_tk, final $f_tk (shown, not judged)"
  [ $((f_rss - b_rss)) -gt $((MAX_RSS_MB * 1024)) ] && FAIL+=("RSS grew $(mb $((f_rss - b_rss))) MB > ${MAX_RSS_MB} MB")
  [ $((f_fd - b_fd)) -gt "$MAX_FDS" ] && FAIL+=("open fds grew $((f_fd - b_fd)) > ${MAX_FDS}")
fi
[ -n "${IDLE_LINE:-}" ] && echo "  drained: $IDLE_LINE"
echo "  SIGHUPs sent: $HUPS; config_reloads_total: $(metric_by expressgateway_config_reloads_total result)"
echo "  requests by code class (gateway): $(metric_by expressgateway_http_requests_total code_class)"
echo "  requests by protocol (gateway): $(metric_by expressgateway_http_requests_total protocol)"
echo "  connections_total: $(metric_by expressgateway_connections_total listener)"
echo "  load tools (requests/errors): wrk $(errs wrk), h2load h2 $(errs h2), h2load h2c $(errs h2c), h3load $(errs h3)"
for t in wrk h2 h2c h3; do
  [ -s "$WORK/stats/$t.last" ] && echo "    $t last problem: $(tr '\n' ' ' <"$WORK/stats/$t.last" | cut -c1-200)"
done
echo "  defence_trips_total:"
metric_by expressgateway_defence_trips_total defence | tr ' ' '\n' | sed '/^$/d; s/^/    /'; echo
TRIPS=" $(metric_by expressgateway_defence_trips_total defence) "
for d in header_timeout handshake_timeout slow_reader h2_ping_flood h2_settings_flood h2_rapid_reset; do
  case $TRIPS in *" $d="*) ;; *) echo "    warning: the attacks never tripped $d" ;; esac
done
echo "  attack runs (JSON per run in the attack logs; closed = connections the gateway closed within the hold):"
python3 - "$WORK/attacks" <<'PY'
import collections, json, os, sys
d = sys.argv[1]
COUNTS = ("closed", "open", "served", "aborted", "connect_failed", "sent", "acks", "bytes",
          "received", "max_connected")
OUTCOMES = ("goaway", "error_code", "reset_code", "ended", "status", "error")
for name in sorted(f for f in os.listdir(d) if not f.endswith(".err")):
    rows = collections.OrderedDict()
    for line in open(os.path.join(d, name)):
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            r = json.loads(line)
        except ValueError:
            continue
        mode = r.get("mode", name)
        key = name if mode in name else f"{name}/{mode}"
        runs, agg, other = rows.setdefault(key, [0, collections.Counter(), collections.Counter()])
        rows[key][0] += 1
        for k, v in r.items():
            if k in COUNTS and isinstance(v, int):
                agg[k] += v
            elif k in COUNTS or k in OUTCOMES:
                other[f"{k}={v}"] += 1
    errs = os.path.join(d, name + ".err")
    nerr = sum(1 for _ in open(errs)) if os.path.exists(errs) else 0
    if not rows:
        print(f"    {name:28} runs=0" + (f" stderr_lines={nerr}" if nerr else ""))
    for key, (runs, agg, other) in rows.items():
        parts = " ".join(f"{k}={v}" for k, v in sorted(agg.items()))
        extra = ", ".join(f"{k} x{v}" for k, v in other.most_common(4))
        print(f"    {key:28} runs={runs} {parts}" + (f" [{extra}]" if extra else "")
              + (f" stderr_lines={nerr}" if nerr else ""))
        if agg["open"]:
            print(f"      warning: {agg['open']} attack connections were still open at the end of their hold")
PY
if [ "$DIED" = 1 ] || ! kill -0 "$GATEWAY_PID" 2>/dev/null; then
  gateway_died
  FAIL+=("the gateway died")
fi
WARN=$(grep -cE 'WARN|ERROR' "$WORK/gateway.log" 2>/dev/null || true)
echo "  gateway log: ${WARN:-0} warn/error lines; last: $(grep -v '^\s*$' "$WORK/gateway.log" | tail -n1 | cut -c1-200)"
if [ "${#FAIL[@]}" -gt 0 ]; then
  printf 'FAIL: %s\n' "${FAIL[@]}"
  exit 1
fi
echo "PASS"
