# Path h1: HTTP/1.1 client -> proxy -> HTTP/1.1 origin (sourced by run.sh).
# max:  wrk -t1 -c32 --latency on each proxy's cleartext port, and the
#       origin directly as a baseline.
# half: h2load --h1 -c32 with --rps, one rate for every proxy: half of the
#       lowest max req/s of the proxies (wrk has no rate limit and wrk2 is
#       not in Debian; h2load's per-request log gives the percentiles).
need wrk wrk
need h2load nghttp2-client
http_peers "$PATH_BASE"
for p in direct nginx haproxy gateway; do
  wrk_case max "$p" "$(peer_pid "$p")" "http://127.0.0.1:$(peer_port H1 "$p")/"
done
half=$(( $(lowest_rate max) / 2 ))
if [ "$half" -gt 0 ]; then
  for p in nginx haproxy gateway; do
    h2load_case half "$p" "$(peer_pid "$p")" "http://127.0.0.1:$(peer_port H1 "$p")/" \
      --h1 -t1 -c32 --rps $(( (half + 31) / 32 ))
  done
fi
