# Path xdp: ns per packet of the XDP program on its conntrack-hit path,
# through BPF_PROG_TEST_RUN (sourced by run.sh; root, no interface, no
# load tool): crates/xdp/examples/testrun_bench, REPEAT (1000000)
# repetitions per round, 5 rounds per case, pinned to PROXY_CPUS; cpu =
# ns/packet of the fastest round (the program's own cost on a shared
# machine), rate = Mpps of one core at the median round. Cases: a TCP hit redirected by
# the FIB (v4, v6), a one-arm TCP hit (XDP_TX), a Mode A short header,
# and a packet for no listener (XDP_PASS) for scale. The figures include
# BPF_PROG_TEST_RUN's own cost per repetition (~45 ns here for a program
# that returns at once). Then the veth half: bench/paths/xdp_veth.sh.
[ "$(id -u)" = 0 ] || die "the xdp path needs root (BPF_PROG_TEST_RUN)"
# XDP_PARTS: "testrun veth" (default) or either one.
XDP_PARTS=${XDP_PARTS:-testrun veth}
if [[ " $XDP_PARTS " == *" testrun "* ]]; then
  XDP_BENCH_BIN=${XDP_BENCH_BIN:-$TARGET/release/examples/testrun_bench}
  if [ "${REBUILD:-1}" != 0 ]; then
    cargo build --release -q -p eg-xdp --example testrun_bench
  fi
  [ -x "$XDP_BENCH_BIN" ] || die "$XDP_BENCH_BIN missing (REBUILD=0 with no build?)"
  if out=$(on_proxy "$XDP_BENCH_BIN" "${REPEAT:-1000000}" 2>&1); then
    echo "$out" >"$WORK/xdp.txt"
    RSS_MIB="-"; UP="-"; REUSE="-"
    while read -r name min median; do
      [ -n "$median" ] || continue
      record "$name" xdp "$(awk -v n="$median" 'BEGIN{printf "%.2f", 1000 / n}')" Mpps \
        - - "$min" ns/pkt 0
    done <<<"$out"
  else
    failed all xdp "testrun_bench: $(tail -n1 <<<"$out")"
  fi
fi
# Mpps on a veth pair: XDP native mode vs the userspace Mode A vs the
# generator's ceiling.
if [[ " $XDP_PARTS " == *" veth "* ]]; then
  # shellcheck source=/dev/null
  . bench/paths/xdp_veth.sh
fi
