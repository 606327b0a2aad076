# Path h2: HTTP/2 over TLS (ALPN h2) -> proxy -> HTTP/1.1 origin (sourced
# by run.sh).
# max:  h2load -t1 -c16 -m8 on each proxy's TLS port.
# half: the same with --rps: half of the lowest max req/s of the proxies,
#       offered to every proxy.
need h2load nghttp2-client
WANT_ALPN=h2
http_peers "$PATH_BASE"
for p in nginx haproxy gateway; do
  h2load_case max "$p" "$(peer_pid "$p")" "https://127.0.0.1:$(peer_port TLS "$p")/" -t1 -c16 -m8
done
half=$(( $(lowest_rate max) / 2 ))
if [ "$half" -gt 0 ]; then
  for p in nginx haproxy gateway; do
    h2load_case half "$p" "$(peer_pid "$p")" "https://127.0.0.1:$(peer_port TLS "$p")/" \
      -t1 -c16 -m8 --rps $(( (half + 15) / 16 ))
  done
fi
