# Sourced by bench/paths/*.sh (after lib.sh): pinning, CPU and RSS of a
# proxy's process tree, the load runners shared by the paths, and `record`,
# which prints a case's row and appends it to $ROWS for run.sh's summary.
#
# Every runner follows the same shape: a warm-up of WARMUP seconds with the
# same load (not measured), then DURATION seconds measured. Between the two
# readings of /proc/<pid>/stat only the measured run counts; the origin's
# accepted connections are read before the warm-up and after the run, so a
# pool's first connections are counted too.

DURATION=${SECONDS_PER_CASE:-10}
WARMUP=${WARMUP_SECONDS:-2}
PROXY_CPUS=${PROXY_CPUS:-0}
LOAD_CPUS=${LOAD_CPUS:-1}
# One proxy worker (thread or process) per CPU it is pinned to, so the
# proxies compare at the same parallelism.
PROXY_WORKERS=$(awk -F, '{print NF}' <<<"$PROXY_CPUS")
HZ=$(getconf CLK_TCK)

# on_proxy CMD... / on_load CMD...: run pinned (taskset execs CMD, so $!
# stays the command's own pid).
on_proxy() { taskset -c "$PROXY_CPUS" "$@"; }
on_load() { taskset -c "$LOAD_CPUS" "$@"; }
# pin_load PID: move a running process (all its threads) to LOAD_CPUS.
pin_load() { taskset -a -pc "$LOAD_CPUS" "$1" >/dev/null; }

# proc_tree PID -> the pid and all its descendants (nginx master + workers)
proc_tree() {
  local c
  echo "$1"
  for c in $(pgrep -P "$1" 2>/dev/null || true); do proc_tree "$c"; done
}
# tree_ticks PID -> utime+stime of the tree in clock ticks; the comm field
# may hold spaces, so fields count after its closing parenthesis (12, 13).
tree_ticks() {
  local p t=0 v
  for p in $(proc_tree "$1"); do
    v=$(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null | awk '{print $12 + $13}') || v=0
    t=$((t + ${v:-0}))
  done
  echo "$t"
}
# tree_rss_kib PID -> summed VmRSS of the tree
tree_rss_kib() {
  local p t=0 v
  for p in $(proc_tree "$1"); do
    v=$(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null) || v=0
    t=$((t + ${v:-0}))
  done
  echo "$t"
}

# UPSTREAM: how a path counts the proxy's connections to the origin.
#   stub PORT: the origin nginx's stub_status `accepts` at /__bench_stub
#              (exact: every connection the origin accepted, less the
#              status queries' own)
#   ss PORT:   connections the proxy's processes hold established to
#              PORT, counted by `ss -p` in the middle of the run (what it
#              holds open, not how many it opened: no reuse figure)
#   none:      not counted (L4, Mode A: one upstream flow per client flow)
UPSTREAM="none"
origin_accepts() {
  on_load curl -s -m 2 "http://127.0.0.1:$1/__bench_stub" | awk 'NR == 3 {print $1}'
}
# ss_open PORT PID -> connections to PORT that the tree of PID holds (other
# proxies' idle pools to the same origin are left out)
ss_open() {
  local pids
  pids=$(proc_tree "$2" | paste -sd'|')
  ss -Htnp state established "( dport = :$1 )" 2>/dev/null | grep -cE "pid=($pids)," || true
}

# case_begin PID: before the warm-up. case_start: after it, before the run
# (starts the mid-run sampler). case_end REQUESTS WARM_REQUESTS: after the
# run; sets TICKS (the proxy's CPU over the run), CPU_PER (us per request),
# RSS_MIB, UP and REUSE.
case_begin() {
  CASE_PID=$1; A0=""
  [ "${UPSTREAM% *}" = stub ] && A0=$(origin_accepts "${UPSTREAM#* }")
  return 0
}
case_start() {
  local half
  rm -f "$WORK/mid.txt"
  half=$(awk -v d="$DURATION" 'BEGIN{print d / 2}')
  ( sleep "$half"
    echo "$( [ -n "$CASE_PID" ] && tree_rss_kib "$CASE_PID" || echo 0) $( [ "${UPSTREAM% *}" = ss ] && ss_open "${UPSTREAM#* }" "$CASE_PID" || echo -)" \
      >"$WORK/mid.txt" ) &
  SAMPLER=$!
  T0=$( [ -n "$CASE_PID" ] && tree_ticks "$CASE_PID" || echo 0)
}
case_end() {
  local n=$1 warm=${2:-0} t1 a1 rss up
  t1=$( [ -n "$CASE_PID" ] && tree_ticks "$CASE_PID" || echo 0)
  TICKS=$((t1 - T0))
  wait "$SAMPLER" 2>/dev/null || true
  read -r rss up <"$WORK/mid.txt" 2>/dev/null || { rss=0; up=-; }
  RSS_MIB=$(awk -v k="${rss:-0}" 'BEGIN{printf "%.1f", k / 1024}')
  CPU_PER=$(awk -v d="$TICKS" -v hz="$HZ" -v n="$n" 'BEGIN{ if (n > 0) printf "%.1f", d / hz * 1e6 / n; else print "-" }')
  UP=${up:--}; REUSE="-"
  if [ -n "$A0" ]; then
    a1=$(origin_accepts "${UPSTREAM#* }")
    if [ -n "$a1" ]; then
      UP=$((a1 - A0 - 1))
      REUSE=$(awk -v u="$UP" -v n=$((n + warm)) 'BEGIN{ if (n > 0) printf "%.3f", 100 * (1 - u / n); else print "-" }')
    fi
  fi
}

# ROWS (set by run.sh): one tab-separated line per case and proxy:
# path case proxy rate rate_unit p50_ms p99_ms cpu cpu_unit rss_mib
# up_conns reuse_pct errors
# record CASE PROXY RATE RATE_UNIT P50 P99 CPU CPU_UNIT ERRORS (RSS, UP and
# REUSE from case_end; a direct baseline gets no CPU, RSS or upstream figures).
record() {
  local rss=$RSS_MIB up=$UP reuse=$REUSE
  if [ "$2" = direct ]; then rss="-"; up="-"; reuse="-"; fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' \
    "$BENCH_PATH" "$1" "$2" "$3" "$4" "$5" "$6" "$7" "$8" "$rss" "$up" "$reuse" "$9" >>"$ROWS"
  row_line "$BENCH_PATH" "$1" "$2" "$3" "$4" "$5" "$6" "$7" "$8" "$rss" "$up" "$reuse" "$9"
}
row_line() {
  printf "%-5s %-8s %-8s %10s %-8s %8s %8s %8s %-7s %8s %8s %8s %s\n" "$@"
}
row_header() {
  row_line path case proxy rate unit p50_ms p99_ms cpu cpu_unit rss_MiB up_conns reuse% errors
}

# failed CASE PROXY WHY: a row saying why a case has no figures.
failed() {
  printf '%s\t%s\t%s\t-\t-\t-\t-\t-\t-\t-\t-\t-\t%s\n' "$BENCH_PATH" "$1" "$2" "failed: $3" >>"$ROWS"
  echo "$BENCH_PATH $1 $2: failed: $3"
}

# to_ms VALUE-WITH-UNIT (us, ms, s) -> milliseconds
to_ms() { awk -v v="$1" 'BEGIN{ n=v+0; if (v ~ /us$/) n/=1000; else if (v ~ /ms$/) ; else if (v ~ /s$/) n*=1000; printf "%.2f", n }'; }

# wrk_case CASE PROXY PID URL: wrk -t1 -c32 --latency (HTTP/1.1).
WRK_ARGS=(-t1 -c32)
wrk_case() {
  local name=$1 proxy=$2 pid=$3 url=$4 out warm reqs
  case_begin "$pid"
  warm=$(on_load wrk "${WRK_ARGS[@]}" -d"${WARMUP}s" "$url" 2>&1 | awk '/requests in/ {print $1; exit}')
  case_start
  out=$(on_load wrk "${WRK_ARGS[@]}" -d"${DURATION}s" --latency "$url" 2>&1) || true
  echo "$out" >"$WORK/wrk-$name-$proxy.txt"
  reqs=$(awk '/requests in/ {print $1; exit}' <<<"$out")
  case_end "${reqs:-0}" "${warm:-0}"
  [ -n "$reqs" ] && [ "$reqs" != 0 ] || { failed "$name" "$proxy" "wrk: $(tail -n1 <<<"$out")"; return; }
  LAST_RATE=$(awk '/^Requests\/sec:/ {printf "%.0f", $2}' <<<"$out")
  record "$name" "$proxy" "$LAST_RATE" req/s \
    "$(to_ms "$(awk '$1 == "50%" {print $2}' <<<"$out")")" \
    "$(to_ms "$(awk '$1 == "99%" {print $2}' <<<"$out")")" \
    "$(cpu_or_dash "$proxy")" us/req \
    "$(awk '/Non-2xx/ {n += $NF} /Socket errors/ {gsub(/,/, ""); n += $4 + $6 + $8 + $10} END {print n + 0}' <<<"$out")"
}
cpu_or_dash() { [ "$1" = direct ] && echo "-" || echo "$CPU_PER"; }

# h2load_case CASE PROXY PID URL H2LOAD-ARGS...: p50/p99 from h2load's
# per-request log (--log-file: start, status, microseconds to the end of
# the response), since h2load prints no percentiles.
h2load_case() {
  local name=$1 proxy=$2 pid=$3 url=$4 out warm done_n log="$WORK/h2log-$1-$2.tsv" alpn errs
  shift 4
  case_begin "$pid"
  warm=$(on_load h2load "$@" -D "$WARMUP" "$url" 2>&1 | awk '/^requests:/ {print $8; exit}')
  case_start
  out=$(on_load h2load "$@" -D "$DURATION" --log-file="$log" "$url" 2>&1) || true
  echo "$out" >"$WORK/h2load-$name-$proxy.txt"
  # requests: N total, N started, N done, N succeeded, N failed, N errored, N timeout
  done_n=$(awk '/^requests:/ {print $8; exit}' <<<"$out")
  case_end "${done_n:-0}" "${warm:-0}"
  [ -n "$done_n" ] && [ "$done_n" != 0 ] \
    || { failed "$name" "$proxy" "h2load: $(grep -m1 -iE 'error|fail|no protocol' <<<"$out" || tail -n1 <<<"$out")"; return; }
  LAST_RATE=$(awk '/^finished in/ {printf "%.0f", $4}' <<<"$out")
  alpn=$(awk '/^Application protocol:/ {print $3; exit}' <<<"$out")
  errs=$(awk '/^requests:/ {n += $10} /^status codes:/ {n += $5 + $7 + $9} END {print n + 0}' <<<"$out")
  [ -n "${WANT_ALPN:-}" ] && [ "$proxy" != direct ] && [ "$alpn" != "$WANT_ALPN" ] && errs="$errs (alpn ${alpn:-none})"
  # shellcheck disable=SC2046
  record "$name" "$proxy" "$LAST_RATE" req/s $(log_pcts "$log") "$(cpu_or_dash "$proxy")" us/req "$errs"
}
# log_pcts FILE -> "p50_ms p99_ms" of the third column (microseconds)
log_pcts() {
  cut -f3 "$1" 2>/dev/null | sort -n | awk '{a[NR] = $1} END {
    if (NR == 0) { print "- -"; exit }
    i = int(NR * 0.50 + 0.5); j = int(NR * 0.99 + 0.5); if (i < 1) i = 1; if (j < 1) j = 1
    printf "%.2f %.2f\n", a[i] / 1000, a[j] / 1000 }'
}

# h3load_case CASE PROXY PID HOST:PORT H3LOAD-ARGS...: the repo's HTTP/3
# load tool; its RESULT line has the percentiles.
h3result() { awk -v k="$1" '/^RESULT / { for (i = 2; i <= NF; i++) { split($i, a, "="); if (a[1] == k) print a[2] } }' "$2"; }
h3load_case() {
  local name=$1 proxy=$2 pid=$3 target=$4 f="$WORK/h3load-${1//\//_}-$2.txt" warm done_n errs n2
  shift 4
  case_begin "$pid"
  on_load "$H3LOAD_BIN" "$target" --ca "$WORK/cert.pem" --single 0 "$@" -d "$WARMUP" >"$f.warm" 2>&1 || true
  warm=$(h3result requests "$f.warm")
  case_start
  on_load "$H3LOAD_BIN" "$target" --ca "$WORK/cert.pem" --single 0 "$@" -d "$DURATION" >"$f" 2>&1 || true
  done_n=$(h3result requests "$f")
  case_end "${done_n:-0}" "${warm:-0}"
  [ -n "$done_n" ] && [ "$done_n" != 0 ] \
    || { failed "$name" "$proxy" "h3load: $(grep -m1 -iE 'error|fatal' "$f" || tail -n1 "$f")"; return; }
  LAST_RATE=$(h3result rps "$f"); LAST_RATE=${LAST_RATE%.*}
  errs=$(h3result errors "$f"); n2=$(h3result non_2xx "$f"); errs=$(( ${errs:-0} + ${n2:-0} ))
  record "$name" "$proxy" "$LAST_RATE" req/s "$(to_ms "$(h3result p50_us "$f")us")" \
    "$(to_ms "$(h3result p99_us "$f")us")" "$(cpu_or_dash "$proxy")" us/req "$errs"
}

# lowest_rate CASE -> the lowest req/s of this path's proxies (not the
# direct baseline) in CASE; the half-load cases offer half of it to every
# proxy, so all of them can sustain it and their p99 compare at one rate.
lowest_rate() {
  awk -F'\t' -v p="$BENCH_PATH" -v c="$1" '$1 == p && $2 == c && $3 != "direct" && $4 + 0 > 0 {
    if (m == "" || $4 + 0 < m) m = $4 + 0 } END { print m + 0 }' "$ROWS"
}
