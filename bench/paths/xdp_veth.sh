# The xdp path's second half (sourced by xdp.sh): packets per second on a
# veth pair, the XDP program in native mode vs the gateway's userspace
# Mode A, and what the load generator can push at all (root).
#
# Two network namespaces joined by a veth: egvc<pid> (client and
# "backend", 10.77.0.2) and egvg<pid> (gateway, 10.77.0.1, forwarding on,
# a permanent neighbour for 10.77.0.2). Load: examples/veth_bench blast
# on LOAD_CPUS in the client namespace, one UDP flow 10.77.0.2:40000 ->
# 10.77.0.1:4433 of 74-byte frames (a QUIC short header carrying the
# QUIC-LB ID of server 0a0b), BATCH=64 per sendmmsg on an AF_PACKET
# socket (pktgen is not in this kernel). Whatever comes back to the
# client veth is dropped there by bench/paths/xdp_drop.c in native mode:
# the client side spends nothing on it, and a veth receives XDP_TX'd
# frames only with an XDP program of its own (GRO on is not enough on
# 6.18: every frame counts as xdp_tx_errors). Cases, each WARMUP_SECONDS
# then SECONDS_PER_CASE measured (rate in Mpps):
#   direct     the generator's ceiling: xdp_drop.c on the gateway veth
#              too, frames the gateway side received (its
#              rx_queue_0_xdp_packets); nothing forwarded
#   xdp        the gateway's XDP program (veth_bench xdp) in native mode,
#              a Mode A service and the flow's conntrack entries from
#              userspace: forwarded by XDP_TX (FwdPackets of the stats
#              map); `errors` = frames that did not reach the client veth
#   gateway    no XDP on the gateway veth; the release gateway on
#              PROXY_CPUS with `[passthrough]` and `[passthrough.quic_lb]`
#              (the first short header enters the flow by its QUIC-LB ID,
#              the rest follow by connection ID): datagrams it sent, as
#              the client veth received them
# cpu: ns of CPU per packet on the gateway side: softirq time of all CPUs
# (/proc/stat: NAPI, where XDP and the receive path run; the client
# veth's drop program included) over the window, plus for `gateway` the
# process's utime+stime. /proc/stat counts ticks (10 ms), and other work
# on a shared machine lands in softirq too: a rough figure.
# NAPI (the XDP program, the gateway namespace's receive path) runs in
# the softirq of the CPU that sends, i.e. on LOAD_CPUS with the
# generator; the gateway process is on PROXY_CPUS. VETH_NAPI_THREADED=1:
# the gateway veth's NAPI in a kernel thread pinned to PROXY_CPUS instead
# (generator and cases with XDP on the gateway veth).
# Knobs: GEN_THREADS (1) sender threads, VETH_NAPI_THREADED (0).
VETH_BENCH_BIN=${VETH_BENCH_BIN:-$TARGET/release/examples/veth_bench}
if [ "${REBUILD:-1}" != 0 ]; then
  cargo build --release -q -p eg-xdp --example veth_bench
fi
[ -x "$VETH_BENCH_BIN" ] || { failed "$VCASE" all "$VETH_BENCH_BIN missing (REBUILD=0 with no build?)"; return 0; }
command -v ethtool >/dev/null || { failed "$VCASE" all "ethtool missing"; return 0; }
# The case name says where NAPI ran and how many senders there were.
VCASE=veth; [ "${VETH_NAPI_THREADED:-0}" = 1 ] && VCASE=veth-napi-thread
[ "${GEN_THREADS:-1}" = 1 ] || VCASE="$VCASE-gen${GEN_THREADS}"
VS=${SECONDS_PER_CASE:-10}; VW=${WARMUP_SECONDS:-2}
NS_G=egvg$$; NS_C=egvc$$; IF_G=egvg$$; IF_C=egvc$$
veth_down() {
  ip netns del "$NS_G" 2>/dev/null || true
  ip netns del "$NS_C" 2>/dev/null || true
}
# Processes first (they live in the namespaces), then the namespaces; on
# every exit, errors and signals included.
trap 'cleanup; veth_down' EXIT
gx() { ip netns exec "$NS_G" "$@"; }
cx() { ip netns exec "$NS_C" "$@"; }
# xdp_count NS IFACE: frames the veth's XDP program has seen.
xdp_count() {
  ip netns exec "$1" ethtool -S "$2" | awk '/rx_queue_0_xdp_packets:/ {print $2}'
}
clang -O2 -target bpf -I"/usr/include/$(uname -m)-linux-gnu" -c bench/paths/xdp_drop.c -o "$WORK/drop.o" \
  || { failed "$VCASE" all "clang could not build xdp_drop.c"; return 0; }
ip netns add "$NS_G"; ip netns add "$NS_C"
ip link add "$IF_G" netns "$NS_G" type veth peer name "$IF_C" netns "$NS_C"
ip -n "$NS_G" addr add 10.77.0.1/24 dev "$IF_G"
ip -n "$NS_C" addr add 10.77.0.2/24 dev "$IF_C"
for n in "$NS_G" "$NS_C"; do ip -n "$n" link set lo up; done
ip -n "$NS_G" link set "$IF_G" up; ip -n "$NS_C" link set "$IF_C" up
MAC_G=$(gx cat "/sys/class/net/$IF_G/address"); MAC_C=$(cx cat "/sys/class/net/$IF_C/address")
ip -n "$NS_G" neigh replace 10.77.0.2 lladdr "$MAC_C" dev "$IF_G" nud permanent
gx sysctl -qw net.ipv4.conf.all.forwarding=1
ip -n "$NS_C" link set dev "$IF_C" xdpdrv obj "$WORK/drop.o" sec xdp
CLIENT=10.77.0.2:40000; LISTENER=10.77.0.1:4433; BACKEND=10.77.0.2:4434

# blast SECONDS: the generator in the background (BLAST_PID, output in
# $WORK/blast.txt).
blast() {
  cx taskset -c "$LOAD_CPUS" "$VETH_BENCH_BIN" blast "$IF_C" "$MAC_G" "$CLIENT" "$LISTENER" "$1" "${GEN_THREADS:-1}" \
    >"$WORK/blast.txt" 2>&1 &
  BLAST_PID=$!; PIDS+=("$BLAST_PID")
}
# napi_pin: with VETH_NAPI_THREADED=1, once an XDP program is on the
# gateway veth (which gives it NAPI: before, the flag cannot be set),
# its NAPI moves into a kernel thread, pinned to PROXY_CPUS.
napi_pin() {
  [ "${VETH_NAPI_THREADED:-0}" = 1 ] || return 0
  # A thread's name is cut to 15 characters.
  local t="" _ name="napi/$IF_G"
  name=${name:0:15}
  for _ in $(seq 50); do
    ip -n "$NS_G" link show "$IF_G" | grep -q 'prog/xdp' && break
    sleep 0.1
  done
  gx sh -c "echo 1 >/sys/class/net/$IF_G/threaded" 2>/dev/null || { echo "  (threaded NAPI refused)"; return 0; }
  for _ in $(seq 50); do
    t=$(pgrep "^$name" || true)
    [ -n "$t" ] && break
    sleep 0.1
  done
  [ -n "$t" ] || { echo "  (no NAPI thread for $IF_G)"; return 0; }
  for p in $t; do taskset -pc "$PROXY_CPUS" "$p" >/dev/null; done
  echo "  (NAPI thread $t on CPU $PROXY_CPUS)"
}
softirq() { awk '/^cpu / {print $8}' /proc/stat; }
proc_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# ns_per TICKS PACKETS (VETH_NAPI_THREADED=1 on the gateway veth: its
# NAPI is a kernel thread's system time, not softirq: no figure, "-")
ns_per_xdp() { if [ "${VETH_NAPI_THREADED:-0}" = 1 ]; then echo -; else ns_per "$@"; fi; }
ns_per() { awk -v t="$1" -v n="$2" -v hz="$HZ" 'BEGIN{ if (n > 0) printf "%.0f", t / hz * 1e9 / n; else print "-" }'; }
mpps() { awk -v n="$1" -v s="$2" 'BEGIN{printf "%.3f", n / s / 1e6}'; }
RSS_MIB="-"; UP="-"; REUSE="-"

# direct: the generator's ceiling.
ip -n "$NS_G" link set dev "$IF_G" xdpdrv obj "$WORK/drop.o" sec xdp
napi_pin
blast $((VW + VS + 1)); sleep "$VW"
a=$(xdp_count "$NS_G" "$IF_G"); s0=$(softirq); sleep "$VS"; b=$(xdp_count "$NS_G" "$IF_G"); s1=$(softirq)
wait "$BLAST_PID" || true
record "$VCASE" direct "$(mpps $((b - a)) "$VS")" Mpps - - "$(ns_per_xdp $((s1 - s0)) $((b - a)))" ns/pkt 0
echo "  (generator sockets: $(cat "$WORK/blast.txt") pps total)"
ip -n "$NS_G" link set dev "$IF_G" xdpdrv off

# xdp: the gateway's program, native mode.
c0=$(xdp_count "$NS_C" "$IF_C")
blast $((VW + VS + 4))
# The pin waits for the thread the attach creates, beside the run.
napi_pin &
if out=$(gx "$VETH_BENCH_BIN" xdp "$IF_G" "$CLIENT" "$LISTENER" 10.77.0.1:62000 "$BACKEND" "$VW" "$VS" 2>&1); then
  wait "$BLAST_PID" || true
  c1=$(xdp_count "$NS_C" "$IF_C")
  read -r _ pps total soft <<<"$(awk '/^fwd/ {sub("total=", "", $6); sub("softirq_ticks=", "", $7); print $1, $2, $6, $7}' <<<"$out")"
  echo "  ($out; the client veth received $((c1 - c0)); generator: $(cat "$WORK/blast.txt"))"
  record "$VCASE" xdp "$(mpps "$pps" 1)" Mpps - - "$(ns_per_xdp "$soft" "$(awk -v p="$pps" -v s="$VS" 'BEGIN{printf "%.0f", p * s}')")" ns/pkt \
    "$(( total > c1 - c0 ? total - (c1 - c0) : 0 ))"
else
  wait "$BLAST_PID" || true
  failed "$VCASE" xdp "veth_bench xdp: $(tail -n1 <<<"$out")"
fi

# gateway: the userspace datapath, XDP off.
cat >"$WORK/gateway.toml" <<CFG
[runtime]
worker_threads = $PROXY_WORKERS

[passthrough]
bind_addr = "$LISTENER"
backends = [{ address = "$BACKEND", server_id = "0a0b" }]

[passthrough.quic_lb]
server_id_len = 2
CFG
[ -x "$GATEWAY_BIN" ] || { failed "$VCASE" gateway "$GATEWAY_BIN missing (REBUILD=0 with no build?)"; return 0; }
RUST_LOG=warn gx taskset -c "$PROXY_CPUS" "$GATEWAY_BIN" "$WORK/gateway.toml" >"$WORK/gateway.log" 2>&1 &
GW_PID=$!; PIDS+=("$GW_PID")
for _ in $(seq 50); do gx ss -uln | grep -q "${LISTENER}" && break; sleep 0.1; done
kill -0 "$GW_PID" 2>/dev/null || { failed "$VCASE" gateway "exited: $(tail -n2 "$WORK/gateway.log")"; return 0; }
blast $((VW + VS + 1)); sleep "$VW"
a=$(xdp_count "$NS_C" "$IF_C"); s0=$(softirq); p0=$(proc_ticks "$GW_PID")
sleep "$VS"
b=$(xdp_count "$NS_C" "$IF_C"); s1=$(softirq); p1=$(proc_ticks "$GW_PID")
wait "$BLAST_PID" || true
record "$VCASE" gateway "$(mpps $((b - a)) "$VS")" Mpps - - "$(ns_per $((s1 - s0 + p1 - p0)) $((b - a)))" ns/pkt 0
echo "  (generator: $(cat "$WORK/blast.txt"); gateway: $(gx nstat -az UdpRcvbufErrors | awk '/Udp/ {print $2}') datagrams lost to a full socket buffer)"
