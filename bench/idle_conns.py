"""Idle connection memory of a proxy, for bench/paths/idle.sh.

  idle_conns.py --port P --proto h1|h1-bare|h2c -n N --pids PID,PID...

Opens --warm connections first (the proxy's allocator and pools settle),
reads the summed VmRSS of --pids, then opens N more; each connection sends
one request (GET /, HTTP/1.1 keep-alive or h2c by prior knowledge), reads
its whole response and then stays open and silent (h1-bare: connects and
sends nothing, a connection before its first request). After --settle seconds
it reads VmRSS again and prints, as its last line:

  RESULT n=N failed=F before_kib=B after_kib=A kib_per_conn=K

K = (A - B) / (N - F). Connections close when the script exits.
"""

import argparse
import socket
import time

import h2.config
import h2.connection
import h2.events

# Every wait has a deadline: a proxy that stops answering fails the
# connection, it does not hang the bench.
TIMEOUT_S = 5.0


def rss_kib(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def h1_conn(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_S)
    s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the response head")
        buf += chunk
    head, body = buf.split(b"\r\n\r\n", 1)
    length = None
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while (length is not None and len(body) < length) or (length is None and not body.endswith(b"0\r\n\r\n")):
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the response body's end")
        body += chunk
    return s


def h2c_conn(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_S)
    c = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True))
    c.initiate_connection()
    c.send_headers(
        1,
        [(":method", "GET"), (":path", "/"), (":scheme", "http"), (":authority", "localhost")],
        end_stream=True,
    )
    s.sendall(c.data_to_send())
    done = False
    while not done:
        data = s.recv(65536)
        if not data:
            raise ConnectionError("closed before the response's end")
        for ev in c.receive_data(data):
            if isinstance(ev, h2.events.StreamEnded) and ev.stream_id == 1:
                done = True
            elif isinstance(ev, (h2.events.StreamReset, h2.events.ConnectionTerminated)):
                raise ConnectionError(f"{type(ev).__name__}")
        s.sendall(c.data_to_send())
    return s


def open_many(n, port, proto, keep):
    failed = 0
    first_error = None
    for _ in range(n):
        try:
            if proto == "h1-bare":
                keep.append(socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_S))
            else:
                keep.append(h1_conn(port) if proto == "h1" else h2c_conn(port))
        except (OSError, ConnectionError, ValueError) as e:
            failed += 1
            first_error = first_error or repr(e)
    return failed, first_error


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--proto", choices=("h1", "h1-bare", "h2c"), required=True)
    ap.add_argument("-n", type=int, default=2000)
    ap.add_argument("--warm", type=int, default=50)
    ap.add_argument("--settle", type=float, default=1.0)
    ap.add_argument("--pids", required=True)
    args = ap.parse_args()
    pids = [int(p) for p in args.pids.split(",") if p]
    keep = []
    open_many(args.warm, args.port, args.proto, keep)
    time.sleep(args.settle)
    before = rss_kib(pids)
    failed, first_error = open_many(args.n, args.port, args.proto, keep)
    time.sleep(args.settle)
    after = rss_kib(pids)
    ok = args.n - failed
    per = (after - before) / ok if ok > 0 else 0.0
    if first_error:
        print(f"first error: {first_error}")
    print(f"RESULT n={args.n} failed={failed} before_kib={before} after_kib={after} kib_per_conn={per:.2f}")
    for s in keep:
        s.close()


if __name__ == "__main__":
    main()
