#!/usr/bin/env bash
# The benchmark entry point: every path the gateway serves, next to its
# peers in one run, on loopback, on this machine.
#
#   bash bench/run.sh                     # every path, 10 s per case
#   bash bench/run.sh h1 h2               # a subset
#   SECONDS_PER_CASE=2 REBUILD=0 bash bench/run.sh idle
#
# Paths (one file each in bench/paths/, sourced in a subshell of its own,
# so each path starts its processes and stops them before the next one):
#   l4     iperf3 -P STREAMS, up and reverse: direct, HAProxy `mode tcp`
#          (splice-auto), the gateway's `tcp` listener
#   h1     HTTP/1.1 -> H1 origin: nginx, HAProxy, gateway (wrk -t1 -c32),
#          and p99 at half load (h2load --h1 --rps)
#   h2     HTTP/2 over TLS -> H1 origin: nginx, HAProxy, gateway (h2load
#          -t1 -c16 -m8), and p99 at half load (h2load --rps)
#   h3     HTTP/3 -> H1 origin: caddy, gateway (examples/h3load -t1 -c8
#          -m10), p99 at half load (h3load --rps), and the gateway's own
#          HTTP/2 at the same shape (the goal compares H3 to it)
#   ws     WebSocket echo over HTTP/1.1 (examples/wsload): nginx, HAProxy,
#          gateway
#   grpc   gRPC unary over TLS -> h2c grpcio origin (h2load): nginx
#          (grpc_pass), HAProxy (proto h2), gateway
#   modea  QUIC passthrough (Mode A) vs straight to the QUIC backend
#          (examples/h3load), `/` and a 64 KiB `/big`
#   idle   N idle H1 (after one request, and bare) and N idle h2c connections
#          (bench/idle_conns.py):
#          RSS growth per connection of nginx, HAProxy and the gateway
#   xdp    (root) ns/packet of the XDP program's conntrack-hit path through
#          BPF_PROG_TEST_RUN (crates/xdp/examples/testrun_bench), and Mpps
#          on a veth pair: native XDP vs the userspace Mode A vs the load
#          generator's ceiling (bench/paths/xdp_veth.sh, examples/veth_bench)
#
# Pinning: each proxy on PROXY_CPUS (taskset), with one worker per CPU there
# (gateway worker_threads, nginx worker_processes, HAProxy nbthread, caddy
# GOMAXPROCS); origins and load tools on LOAD_CPUS. Each case: WARMUP_SECONDS
# of the same load, then SECONDS_PER_CASE measured.
#
# Columns printed per case and proxy (and appended to bench/RESULTS.md,
# with the date and the commit):
#   rate      req/s (msg/s for ws, Gbit/s for l4, KiB per connection for idle)
#   p50/p99   latency in ms (wrk --latency; h2load's per-request log; h3load)
#   cpu       utime+stime of every process of the proxy (from /proc/<pid>/stat,
#             before and after the measured run) per request (us/req), per
#             echoed message (us/msg) or per GiB moved (ms/GiB)
#   rss       VmRSS of the proxy's processes, sampled in the middle of the run
#   up_conns  connections the proxy opened to the origin from the warm-up's
#             start to the run's end (the origin nginx's stub_status
#             `accepts`); ws and grpc: connections open to the origin in the
#             middle of the run (`ss`), as their origins have no counter
#   reuse%    100 * (1 - up_conns / requests of warm-up and run)
#   ratio     on gateway rows: gateway / best peer of the case (cpu; p99 for
#             the half-load cases; KiB per connection for idle)
#
# Knobs:
#   SECONDS_PER_CASE (10)  measured seconds per case
#   WARMUP_SECONDS (2)     unmeasured load before each case
#   REBUILD=0              skip `cargo build --release` (gateway, h3load, wsload;
#                          the xdp path builds testrun_bench itself)
#   XDP_BENCH_BIN, REPEAT  the xdp path's binary and repetitions (1000000)
#   XDP_PARTS ("testrun veth"), VETH_BENCH_BIN, GEN_THREADS (1),
#   VETH_NAPI_THREADED (0)  the xdp path's veth half (see xdp_veth.sh)
#   GATEWAY_BIN            the gateway binary (default
#                          ${CARGO_TARGET_DIR:-target}/release/expressgateway)
#   H3LOAD_BIN, WSLOAD_BIN the load tools (default ${CARGO_TARGET_DIR:-target}/
#                          release/examples/{h3load,wsload})
#   BENCH_BASE_PORT (25300) each path uses 20 ports from base + 20 * its index
#   PROXY_CPUS (0), LOAD_CPUS (1)  comma-separated CPU lists for taskset
#   IDLE_CONNS (2000)      connections per protocol in the idle path
#   STREAMS (4)            iperf3 streams in the l4 path
#   L4_UNPINNED=1          the l4 path without taskset, one worker per core
#   RESULTS (bench/RESULTS.md), KEEP_WORK=1 (keep each path's temp dir)
# Benchmarks stay out of .ci/run: figures on a shared machine are noise.
set -euo pipefail
cd "$(dirname "$0")/.."

ALL_PATHS=(l4 h1 h2 h3 ws grpc modea idle xdp)
if [ $# -eq 0 ]; then set -- "${ALL_PATHS[@]}"; fi
for p in "$@"; do
  known=0
  for q in "${ALL_PATHS[@]}"; do [ "$p" = "$q" ] && known=1; done
  [ "$known" = 1 ] || { echo "error: unknown path '$p' (paths: ${ALL_PATHS[*]})" >&2; exit 2; }
done

TARGET=${CARGO_TARGET_DIR:-target}
export GATEWAY_BIN=${GATEWAY_BIN:-$TARGET/release/expressgateway}
export H3LOAD_BIN=${H3LOAD_BIN:-$TARGET/release/examples/h3load}
export WSLOAD_BIN=${WSLOAD_BIN:-$TARGET/release/examples/wsload}
RESULTS=${RESULTS:-bench/RESULTS.md}
BASE=${BENCH_BASE_PORT:-25300}

command -v taskset >/dev/null || { echo "error: taskset (util-linux) is needed for pinning" >&2; exit 1; }
if [ "${REBUILD:-1}" != 0 ]; then
  echo "building (cargo build --release: gateway, h3load, wsload)"
  cargo build --release -q -p expressgateway --bin expressgateway --example h3load --example wsload
fi

COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
# RESULTS.md itself is left out: the previous run's rows would make every
# later run "dirty".
[ -n "$(git status --porcelain -- . ":!$RESULTS" 2>/dev/null)" ] && COMMIT="$COMMIT-dirty"
STAMP=$(date -u +%Y-%m-%dT%H:%MZ)
ROWS=$(mktemp)
trap 'rm -f "$ROWS"' EXIT
export ROWS

echo "bench $STAMP commit $COMMIT: ${SECONDS_PER_CASE:-10}s per case after ${WARMUP_SECONDS:-2}s warm-up;" \
  "proxy on CPU ${PROXY_CPUS:-0}, origin and load on CPU ${LOAD_CPUS:-1}; $(nproc) cores, loopback"
FAILED=()
for p in "$@"; do
  idx=0
  for i in "${!ALL_PATHS[@]}"; do [ "${ALL_PATHS[$i]}" = "$p" ] && idx=$i; done
  echo
  echo "== $p"
  # Not in an `if`: errexit would be off inside the subshell there.
  set +e
  # shellcheck source=/dev/null
  ( set -e
    BENCH_PATH=$p PATH_BASE=$((BASE + 20 * idx))
    . bench/lib.sh; . bench/measure.sh; . bench/peers.sh
    row_header
    . "bench/paths/$p.sh" )
  rc=$?
  set -e
  [ "$rc" = 0 ] || FAILED+=("$p")
done

echo
python3 bench/summary.py "$ROWS" "$STAMP" "$COMMIT" "$RESULTS"
[ ${#FAILED[@]} -eq 0 ] || { echo "paths that failed to run: ${FAILED[*]}" >&2; exit 1; }
