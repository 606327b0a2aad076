"""Hostile clients for bench/soak.sh, loopback only, each run bounded by
--hold seconds (plus a few seconds of slack). Prints one JSON line.

usage: soak_attacks.py MODE --port N [--count N] [--hold S] [--path P] [--tls]
  silent          open --count TCP connections and send nothing
  slow-reader     GET --path (a large body) on --count H1 connections with a
                  tiny receive buffer, never read
  aborted-upload  --count POSTs announcing 1 MiB, send 4 KiB, close
  stalled-upload  --count POSTs announcing 1 MiB, send 4 KiB, then nothing
  idle-keepalive  --count H1 connections, one GET each, then left idle
  ping-flood      HTTP/2 (h2c) PING flood of --count frames
  settings-flood  HTTP/2 (h2c) SETTINGS flood of --count frames
  rapid-reset     HTTP/2 (h2c) HEADERS + RST_STREAM, --count streams
  h2-slow-reader  HTTP/2 (h2c) GET --path, no WINDOW_UPDATE ever

The connection modes report how many of the connections the gateway
closed within --hold ("closed") and how many were still open ("open");
the HTTP/2 modes report the GOAWAY code (11 = ENHANCE_YOUR_CALM) or the
stream reset. The h2 modes follow crates/expressgateway/tests/e2e/py/
h2_attacks.py (python-hyper `h2`), plus rapid reset.
"""

import argparse
import errno
import json
import socket
import ssl
import time


def dial(port, tls, rcvbuf=None):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        # Before connect, so the advertised window starts small.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(3)
    s.connect(("127.0.0.1", port))
    if tls:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.set_alpn_protocols(["http/1.1"])
        s = ctx.wrap_socket(s, server_hostname="localhost")
    return s


def is_closed(s):
    """True once the peer closed (EOF or reset). Drains what is buffered:
    bounded, as the caller's window stays small."""
    s.setblocking(False)
    try:
        for _ in range(64):
            data = s.recv(65536)
            if not data:
                return True
    except ssl.SSLWantReadError:
        return False
    except BlockingIOError:
        return False
    except (ConnectionError, ssl.SSLError, OSError) as e:
        if isinstance(e, OSError) and e.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
            return False
        return True
    return False


def wait_closed(socks, hold, probe_every=0.5):
    """Poll until every socket is closed by the peer or `hold` passes.
    Returns (closed, open, seconds until the last close)."""
    start = time.monotonic()
    open_ = list(socks)
    last = 0.0
    while open_ and time.monotonic() - start < hold:
        time.sleep(probe_every)
        still = []
        for s in open_:
            if is_closed(s):
                last = time.monotonic() - start
                s.close()
            else:
                still.append(s)
        open_ = still
    n_open = len(open_)
    for s in open_:
        s.close()
    return len(socks) - n_open, n_open, round(last, 2)


def open_many(args, rcvbuf=None, tls=False):
    socks, failed = [], 0
    for _ in range(args.count):
        try:
            socks.append(dial(args.port, tls, rcvbuf))
        except OSError:
            failed += 1
    return socks, failed


def silent(args):
    socks, failed = open_many(args, tls=False)
    closed, open_, last = wait_closed(socks, args.hold)
    return {"closed": closed, "open": open_, "last_close_s": last, "connect_failed": failed}


def request_head(method, path, extra=""):
    return (f"{method} {path} HTTP/1.1\r\nHost: localhost\r\n{extra}\r\n").encode()


def slow_reader(args):
    socks, failed = open_many(args, rcvbuf=4096, tls=args.tls)
    for s in socks:
        try:
            s.sendall(request_head("GET", args.path))
        except OSError:
            pass
    # Never read until the gateway should have given up on us. Its close
    # cannot be seen without reading: the FIN waits behind the data still
    # in its send buffer (a few MiB at most), so drain a bounded amount.
    time.sleep(args.hold)
    closed = 0
    for s in socks:
        if drained_to_eof(s, 16 << 20):
            closed += 1
        s.close()
    return {"closed": closed, "open": len(socks) - closed, "connect_failed": failed}


def drained_to_eof(s, limit):
    """True when the peer closed within `limit` bytes; False when it is
    still sending (or silent for a second)."""
    s.settimeout(1)
    got = 0
    try:
        while got < limit:
            data = s.recv(1 << 20)
            if not data:
                return True
            got += len(data)
    except socket.timeout:
        return False
    except (ConnectionError, ssl.SSLError, OSError):
        return True
    return False


def upload(args, stall):
    socks, failed = open_many(args, tls=args.tls)
    head = request_head(
        "POST", "/upload", "Content-Length: 1048576\r\nContent-Type: application/octet-stream\r\n"
    )
    for s in socks:
        try:
            s.sendall(head + b"x" * 4096)
        except OSError:
            pass
    if not stall:
        for s in socks:
            # RST, not FIN: an upload cut off mid-body.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            s.close()
        return {"aborted": len(socks), "connect_failed": failed}
    closed, open_, last = wait_closed(socks, args.hold)
    return {"closed": closed, "open": open_, "last_close_s": last, "connect_failed": failed}


def read_response(s, deadline):
    """Reads one response with a Content-Length body; True on success."""
    buf = b""
    s.settimeout(max(0.1, deadline - time.monotonic()))
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(4096)
        if not chunk:
            return False
        buf += chunk
    head, body = buf.split(b"\r\n\r\n", 1)
    length = 0
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            length = int(v.strip())
    while len(body) < length:
        chunk = s.recv(4096)
        if not chunk:
            return False
        body += chunk
    return head.startswith(b"HTTP/1.1 200")


def idle_keepalive(args):
    socks, failed = open_many(args, tls=args.tls)
    ok = []
    deadline = time.monotonic() + 5
    for s in socks:
        try:
            s.sendall(request_head("GET", "/"))
            if read_response(s, deadline):
                ok.append(s)
                continue
        except OSError:
            pass
        s.close()
    closed, open_, last = wait_closed(ok, args.hold)
    return {
        "served": len(ok),
        "closed": closed,
        "open": open_,
        "last_close_s": last,
        "connect_failed": failed,
    }


# ------------------------------------------------------------- HTTP/2 ---


def _test_clients():
    """The e2e suite's hostile HTTP/2 client helpers (one copy of them)."""
    import os
    import sys

    here = os.path.dirname(os.path.abspath(__file__))
    sys.path.insert(0, os.path.join(here, "..", "crates", "expressgateway", "tests", "e2e", "py"))
    import h2_attacks

    return h2_attacks


def _as_test_args(args):
    """The soak's arguments as the test script names them (`hold` is its `timeout`)."""
    import types

    return types.SimpleNamespace(
        port=args.port, path=args.path, count=args.count, timeout=args.hold
    )


def h2_flood(args, kind):
    return _test_clients().flood(_as_test_args(args), kind)


def h2_slow_reader(args):
    return _test_clients().slow_reader(_as_test_args(args))

MODES = {
    "silent": silent,
    "slow-reader": slow_reader,
    "aborted-upload": lambda a: upload(a, stall=False),
    "stalled-upload": lambda a: upload(a, stall=True),
    "idle-keepalive": idle_keepalive,
    "ping-flood": lambda a: h2_flood(a, "ping"),
    "settings-flood": lambda a: h2_flood(a, "settings"),
    "rapid-reset": lambda a: h2_flood(a, "reset"),
    "h2-slow-reader": h2_slow_reader,
}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=sorted(MODES))
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--path", default="/")
    p.add_argument("--count", type=int, default=10)
    p.add_argument("--hold", type=float, default=10.0)
    p.add_argument("--tls", action="store_true")
    args = p.parse_args()
    try:
        report = MODES[args.mode](args)
    except Exception as e:  # one line either way, for the soak's log
        report = {"error": f"{type(e).__name__}: {e}"}
    report["mode"] = args.mode
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
