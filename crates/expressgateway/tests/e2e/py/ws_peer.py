"""WebSocket peers for the e2e tests (PyPI `websockets`, `niquests`, `h2`).

  ws_peer.py serve [--lifetime S]
      An RFC 6455 echo origin (websockets) on 127.0.0.1:0. Prints
      "PORT <n>" once listening, then one "CLOSED <code> <reason>" line per
      WebSocket the gateway closed towards it. Subprotocol "chat.v2" is
      chosen when offered. Path /close: answers the first message by
      closing with 4321 "bye".

  ws_peer.py client --url U [--protocols a,b] --scenario S
      A websockets client; prints one JSON report. Scenarios:
        echo:SIZE,SIZE..   binary messages of these sizes (and one text) echoed intact
        big:N              one N-byte message; report the close code
        pings:N            N pings at once; report the close code
        idle               wait for the gateway to close; report the code
        partial            a frame header and then silence; report the code
        server-close       path /close: the origin closes with 4321 "bye"
        client-close       close with 4000 "done" and report the reply
        hold:SECS          one echo every 0.1 s for SECS seconds
        status             expect the handshake refused; report the status

  ws_peer.py niquests --url wss+rfc8441://... --ca CA --size N [--h3] [--close]
                                                         [--hold S]
      niquests over HTTP/2 (RFC 8441), or HTTP/3 only with --h3 (RFC 9220;
      urllib3-future speaks it over qh3, which trusts only a CA-issued
      chain, not a self-signed leaf): text and an N-byte message echoed;
      --hold S then waits S seconds and echoes once more; --close then
      closes with 1000 and waits for the close reply.

  ws_peer.py h2 --port P --ca CA --size N [--settings-only]
      The `h2` library over TLS: checks SETTINGS_ENABLE_CONNECT_PROTOCOL,
      opens an extended CONNECT with a Sec-WebSocket-Key (reports the
      Sec-WebSocket-Accept) and echoes an N-byte message under HTTP/2
      flow control (it acknowledges data only as it reads it).
      --settings-only: report the setting and stop.
"""

import argparse
import asyncio
import hashlib
import json
import os
import socket
import ssl
import struct
import sys
import time


def pattern(n, seed=7):
    block = hashlib.sha256(str(seed).encode()).digest() * 2048
    out = bytearray()
    while len(out) < n:
        out.extend(block)
    return bytes(out[:n])


async def serve(args):
    import websockets
    from websockets.asyncio.server import serve as ws_serve

    async def handler(ws):
        try:
            async for msg in ws:
                if ws.request.path == "/close":
                    await ws.close(4321, "bye")
                    break
                await ws.send(msg)
        except websockets.ConnectionClosed:
            pass
        rcvd = ws.protocol.close_rcvd
        code = rcvd.code if rcvd else "none"
        reason = rcvd.reason if rcvd else ""
        print(f"CLOSED {code} {reason}", flush=True)

    def select(conn, offered):
        return "chat.v2" if "chat.v2" in offered else None

    async with ws_serve(
        handler,
        "127.0.0.1",
        0,
        select_subprotocol=select,
        max_size=None,
        ping_interval=None,
        compression=None,
    ) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        print(f"PORT {port}", flush=True)
        await asyncio.sleep(args.lifetime)


async def client(args):
    import websockets
    from websockets.asyncio.client import connect

    report = {}
    kind, _, arg = args.scenario.partition(":")
    protocols = args.protocols.split(",") if args.protocols else None
    try:
        ws = await connect(
            args.url,
            subprotocols=protocols,
            max_size=None,
            ping_interval=None,
            compression=None,
            open_timeout=10,
            close_timeout=10,
        )
    except websockets.InvalidStatus as e:
        report["status"] = e.response.status_code
        print(json.dumps(report))
        return
    report["subprotocol"] = ws.subprotocol
    try:
        if kind == "echo":
            ok = []
            await ws.send("hello")
            ok.append(await ws.recv() == "hello")
            for i, size in enumerate(int(s) for s in arg.split(",")):
                data = pattern(size, i)
                await ws.send(data)
                back = await asyncio.wait_for(ws.recv(), 60)
                ok.append(back == data)
            report["ok"] = all(ok)
            await ws.close(1000, "finished")
        elif kind == "big":
            await ws.send(pattern(int(arg)))
            await asyncio.wait_for(ws.wait_closed(), 20)
        elif kind == "pings":
            for _ in range(int(arg)):
                await ws.ping()
            await asyncio.wait_for(ws.wait_closed(), 20)
        elif kind == "idle":
            started = time.monotonic()
            await asyncio.wait_for(ws.wait_closed(), 30)
            report["after_s"] = time.monotonic() - started
        elif kind == "partial":
            # A binary frame header announcing 100 bytes, then 10 of them.
            transport = ws.transport
            transport.write(bytes([0x82, 0x80 | 100]) + os.urandom(4) + b"x" * 10)
            await asyncio.wait_for(ws.wait_closed(), 30)
        elif kind == "server-close":
            await ws.send("x")
            await asyncio.wait_for(ws.wait_closed(), 20)
        elif kind == "client-close":
            await ws.close(4000, "done")
        elif kind == "hold":
            n = 0
            until = time.monotonic() + float(arg)
            while time.monotonic() < until:
                await ws.send(f"m{n}")
                if await asyncio.wait_for(ws.recv(), 5) != f"m{n}":
                    raise RuntimeError("echo mismatch")
                n += 1
                await asyncio.sleep(0.1)
            report["echoed"] = n
            await ws.close(1000, "finished")
    except websockets.ConnectionClosed:
        pass
    rcvd = ws.protocol.close_rcvd
    report["close_code"] = rcvd.code if rcvd else None
    report["close_reason"] = rcvd.reason if rcvd else None
    print(json.dumps(report))


def niquests_client(args):
    import niquests

    report = {}
    if args.h3:
        # HTTP/3 only (RFC 9220): niquests then dials QUIC directly.
        session = niquests.Session(disable_http1=True, disable_http2=True)
    else:
        session = niquests.Session(disable_http3=True)
    with session as s:
        r = s.get(args.url, verify=args.ca, timeout=20)
        report["status"] = r.status_code
        report["http_version"] = r.http_version
        ext = r.extension
        if ext is None:
            report["error"] = "no WebSocket extension on the response"
            print(json.dumps(report))
            return
        ext.send_payload("hello")
        report["text_ok"] = ext.next_payload() == "hello"
        data = pattern(args.size)
        ext.send_payload(data)
        got = b""
        while len(got) < len(data):
            part = ext.next_payload()
            if part is None:
                break
            got += part if isinstance(part, bytes) else part.encode()
        report["binary_ok"] = got == data
        if args.hold:
            # Silent past the listener's total_timeout_ms, then one more echo.
            time.sleep(args.hold)
            ext.send_payload("after hold")
            report["hold_ok"] = ext.next_payload() == "after hold"
        if args.close:
            report["closed_by_peer"] = niquests_close(ext)
        ext.close()
    print(json.dumps(report))


def niquests_close(ext):
    """Close with 1000 "finished" and wait for the peer's close frame.

    niquests' own ext.close() sends wsproto's CloseConnection(0): status
    code 0, which RFC 6455 7.4 forbids on the wire, so a conforming relay
    answers it with 1002. This sends a valid close through the same
    wsproto connection and stream; next_payload() returns None once the
    peer's close frame arrives."""
    from wsproto.events import CloseConnection

    ext._dsa.sendall(ext._protocol.send(CloseConnection(1000, "finished")))
    while True:
        part = ext.next_payload()
        if part is None:
            return ext._remote_shutdown


def ws_frame(opcode, payload):
    """A masked client frame."""
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        head = bytes([0x80 | opcode, 0x80 | n])
    elif n < 65536:
        head = bytes([0x80 | opcode, 0x80 | 126]) + struct.pack("!H", n)
    else:
        head = bytes([0x80 | opcode, 0x80 | 127]) + struct.pack("!Q", n)
    return head + mask + _mask(payload, mask)


def _mask(payload, mask):
    # XOR through big-integer arithmetic: fast enough for a few MiB.
    reps = (len(payload) + 3) // 4
    m = int.from_bytes(mask * reps, "big")
    p = int.from_bytes(payload + b"\0" * (reps * 4 - len(payload)), "big")
    return (p ^ m).to_bytes(reps * 4, "big")[: len(payload)]


def parse_frames(buf, masked=False):
    """Complete frames in buf (client frames are masked): (frames, rest)."""
    frames = []
    while len(buf) >= 2:
        op = buf[0] & 0x0F
        n = buf[1] & 0x7F
        off = 2
        if n == 126:
            if len(buf) < 4:
                break
            n = struct.unpack("!H", buf[2:4])[0]
            off = 4
        elif n == 127:
            if len(buf) < 10:
                break
            n = struct.unpack("!Q", buf[2:10])[0]
            off = 10
        key = 4 if masked else 0
        if len(buf) < off + key + n:
            break
        payload = buf[off + key : off + key + n]
        if masked:
            payload = _mask(payload, buf[off : off + 4])
        frames.append((buf[0] & 0x80, op, payload))
        buf = buf[off + key + n :]
    return frames, buf


def h2_client(args):
    import h2.config
    import h2.connection
    import h2.events
    import h2.settings

    ctx = ssl.create_default_context(cafile=args.ca)
    ctx.set_alpn_protocols(["h2"])
    raw = socket.create_connection(("127.0.0.1", args.port), timeout=20)
    sock = ctx.wrap_socket(raw, server_hostname="localhost")
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    report = {}
    enable = None
    deadline = time.monotonic() + 20

    def pump():
        data = sock.recv(65536)
        if not data:
            raise RuntimeError("connection closed")
        events = conn.receive_data(data)
        out = conn.data_to_send()
        if out:
            sock.sendall(out)
        return events

    while enable is None and time.monotonic() < deadline:
        for ev in pump():
            if isinstance(ev, h2.events.RemoteSettingsChanged):
                s = ev.changed_settings.get(h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL)
                enable = s.new_value if s else 0
    report["enable_connect_protocol"] = enable
    if args.settings_only:
        sock.close()
        print(json.dumps(report))
        return
    sid = conn.get_next_available_stream_id()
    conn.send_headers(
        sid,
        [
            (":method", "CONNECT"),
            (":protocol", "websocket"),
            (":scheme", "https"),
            (":path", "/h2"),
            (":authority", f"localhost:{args.port}"),
            ("sec-websocket-version", "13"),
            # RFC 6455 1.3's sample key: optional on HTTP/2, but answered.
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ],
    )
    sock.sendall(conn.data_to_send())
    status = None
    while status is None and time.monotonic() < deadline:
        for ev in pump():
            if isinstance(ev, h2.events.ResponseReceived):
                head = dict(ev.headers)
                status = head.get(b":status")
                accept = head.get(b"sec-websocket-accept")
                report["accept"] = accept.decode() if accept else None
    report["status"] = int(status) if status else None
    data = pattern(args.size)
    frame = ws_frame(0x2, data)
    # Send under flow control: never more than the window allows.
    sent = 0
    got = bytearray()
    buf = bytearray()  # grows in place: a 10 MiB echo arrives in many DATA frames
    echoed = None
    while time.monotonic() < deadline and echoed is None:
        while sent < len(frame):
            window = min(conn.local_flow_control_window(sid), conn.max_outbound_frame_size)
            if window <= 0:
                break
            chunk = frame[sent : sent + window]
            conn.send_data(sid, chunk)
            sent += len(chunk)
        out = conn.data_to_send()
        if out:
            sock.sendall(out)
        for ev in pump():
            if isinstance(ev, h2.events.DataReceived):
                buf += ev.data
                conn.acknowledge_received_data(ev.flow_controlled_length, sid)
                frames, buf = parse_frames(buf)
                for fin, op, payload in frames:
                    if op in (0x0, 0x2):
                        got.extend(payload)
                        if fin:
                            echoed = bytes(got)
            elif isinstance(ev, h2.events.StreamReset):
                raise RuntimeError(f"stream reset {ev.error_code}")
        out = conn.data_to_send()
        if out:
            sock.sendall(out)
    report["echo_ok"] = echoed == data
    conn.send_data(sid, ws_frame(0x8, struct.pack("!H", 1000)))
    sock.sendall(conn.data_to_send())
    sock.close()
    print(json.dumps(report))


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--lifetime", type=float, default=300)
    c = sub.add_parser("client")
    c.add_argument("--url", required=True)
    c.add_argument("--protocols")
    c.add_argument("--scenario", required=True)
    n = sub.add_parser("niquests")
    n.add_argument("--url", required=True)
    n.add_argument("--ca", required=True)
    n.add_argument("--size", type=int, default=1 << 20)
    n.add_argument("--h3", action="store_true")
    n.add_argument("--close", action="store_true")
    n.add_argument("--hold", type=float, default=0)
    h = sub.add_parser("h2")
    h.add_argument("--port", type=int, required=True)
    h.add_argument("--ca", required=True)
    h.add_argument("--size", type=int, default=1 << 20)
    h.add_argument("--settings-only", action="store_true")
    args = p.parse_args()
    if args.cmd == "serve":
        asyncio.run(serve(args))
    elif args.cmd == "client":
        asyncio.run(client(args))
    elif args.cmd == "niquests":
        niquests_client(args)
    else:
        h2_client(args)


if __name__ == "__main__":
    sys.exit(main())
