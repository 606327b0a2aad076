# Path idle: memory per idle connection (sourced by run.sh). For H1 and for
# h2c (prior knowledge), bench/idle_conns.py opens IDLE_CONNS connections to
# each proxy of http_peers (nginx, HAProxy, the gateway's `h1` listener),
# each after one request and then silent, and reports the growth of the
# proxy's summed VmRSS divided by the connections (rate column, KiB/conn;
# rss column: MiB with all of them open). 50 connections open first, so the
# figure is per connection, not the first connection's pools. Case h1-bare:
# H1 connections that sent nothing yet (the proxies' header timeouts are
# 10 s and more, past the measurement).
python3 -c 'import h2' 2>/dev/null || PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install -q h2
N=${IDLE_CONNS:-2000}
# Fresh proxies for each case (a subshell with its own work directory and
# clean-up): an allocator keeps what the previous case's connections freed,
# which would hide the next case's growth.
for proto in h1 h1-bare h2c; do
  ( . bench/lib.sh
    http_peers "$PATH_BASE"
    kind=H1; [ "$proto" = h2c ] && kind=H2C
    for p in nginx haproxy gateway; do
      f="$WORK/idle-$proto-$p.txt"
      on_load python3 bench/idle_conns.py --port "$(peer_port "$kind" "$p")" --proto "$proto" -n "$N" \
        --pids "$(proc_tree "$(peer_pid "$p")" | paste -sd,)" >"$f" 2>&1 || true
      per=$(h3result kib_per_conn "$f")
      [ -n "$per" ] || { failed "$proto" "$p" "idle_conns.py: $(tail -n1 "$f")"; continue; }
      RSS_MIB=$(awk -v k="$(h3result after_kib "$f")" 'BEGIN{printf "%.1f", k / 1024}'); UP="-"; REUSE="-"
      record "$proto" "$p" "$per" KiB/conn - - - - "$(h3result failed "$f")"
    done )
done
