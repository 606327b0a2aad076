"""WebSocket over HTTP/3 (RFC 9220) with aioquic, for the e2e tests.

  ws_h3.py client --port P --ca CA --size N [--settings-only]
      Checks the server's SETTINGS_ENABLE_CONNECT_PROTOCOL, opens an
      extended CONNECT (:protocol websocket) with a Sec-WebSocket-Key
      (reports the Sec-WebSocket-Accept), echoes a text and an N-byte
      message, closes with 1000. Prints one JSON report. --settings-only:
      report the setting (and that SETTINGS arrived) and stop.

  ws_h3.py serve --cert C --key K
      An RFC 9220 WebSocket echo origin on 127.0.0.1:0 (UDP). Prints
      "PORT <n>", then "CLOSED <code>" per close frame it receives.
"""

import argparse
import asyncio
import json
import os
import ssl
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ws_peer import parse_frames, pattern, ws_frame  # noqa: E402

from aioquic.asyncio import QuicConnectionProtocol, connect, serve  # noqa: E402
from aioquic.h3.connection import H3_ALPN, H3Connection, Setting  # noqa: E402
from aioquic.h3.events import DataReceived, HeadersReceived  # noqa: E402
from aioquic.quic.configuration import QuicConfiguration  # noqa: E402


def server_frame(opcode, payload):
    """An unmasked server frame."""
    n = len(payload)
    if n < 126:
        head = bytes([0x80 | opcode, n])
    elif n < 65536:
        head = bytes([0x80 | opcode, 126]) + struct.pack("!H", n)
    else:
        head = bytes([0x80 | opcode, 127]) + struct.pack("!Q", n)
    return head + payload


class Client(QuicConnectionProtocol):
    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.h3 = H3Connection(self._quic)
        self.status = asyncio.get_running_loop().create_future()
        self.accept = None
        self.messages = asyncio.Queue()
        self.buf = b""
        self.partial = bytearray()

    def quic_event_received(self, event):
        for ev in self.h3.handle_event(event):
            if isinstance(ev, HeadersReceived) and not self.status.done():
                head = dict(ev.headers)
                accept = head.get(b"sec-websocket-accept")
                self.accept = accept.decode() if accept else None
                self.status.set_result(int(head[b":status"]))
            elif isinstance(ev, DataReceived):
                self.buf += ev.data
                frames, self.buf = parse_frames(self.buf)
                for fin, op, payload in frames:
                    if op == 0x8:
                        code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                        self.messages.put_nowait(("close", code))
                    elif op in (0x0, 0x1, 0x2):
                        self.partial.extend(payload)
                        if fin:
                            self.messages.put_nowait(("data", bytes(self.partial)))
                            self.partial = bytearray()


async def client(args):
    cfg = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN)
    cfg.load_verify_locations(args.ca)
    cfg.server_name = "localhost"
    report = {}
    async with connect("127.0.0.1", args.port, configuration=cfg, create_protocol=Client) as c:
        # SETTINGS arrive on the control stream right after the handshake.
        for _ in range(100):
            if c.h3.received_settings is not None:
                break
            await asyncio.sleep(0.02)
        settings = c.h3.received_settings or {}
        report["enable_connect_protocol"] = settings.get(Setting.ENABLE_CONNECT_PROTOCOL)
        report["settings_seen"] = c.h3.received_settings is not None
        if args.settings_only:
            print(json.dumps(report))
            return
        sid = c._quic.get_next_available_stream_id()
        c.h3.send_headers(
            sid,
            [
                (b":method", b"CONNECT"),
                (b":protocol", b"websocket"),
                (b":scheme", b"https"),
                (b":path", b"/h3"),
                (b":authority", f"localhost:{args.port}".encode()),
                (b"sec-websocket-version", b"13"),
                # RFC 6455 1.3's sample key: optional on HTTP/3, but answered.
                (b"sec-websocket-key", b"dGhlIHNhbXBsZSBub25jZQ=="),
            ],
        )
        c.transmit()
        report["status"] = await asyncio.wait_for(c.status, 10)
        report["accept"] = c.accept
        ok = []
        for payload, op in ((b"hello over h3", 0x1), (pattern(args.size), 0x2)):
            c.h3.send_data(sid, ws_frame(op, payload), end_stream=False)
            c.transmit()
            kind, got = await asyncio.wait_for(c.messages.get(), 30)
            ok.append(kind == "data" and got == payload)
        report["echo_ok"] = all(ok)
        c.h3.send_data(sid, ws_frame(0x8, struct.pack("!H", 1000)), end_stream=False)
        c.transmit()
        try:
            kind, code = await asyncio.wait_for(c.messages.get(), 5)
            report["close_code"] = code if kind == "close" else None
        except asyncio.TimeoutError:
            report["close_code"] = None
    print(json.dumps(report))


class Origin(QuicConnectionProtocol):
    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.h3 = H3Connection(self._quic)
        self.bufs = {}

    def quic_event_received(self, event):
        for ev in self.h3.handle_event(event):
            if isinstance(ev, HeadersReceived):
                h = dict(ev.headers)
                ok = h.get(b":method") == b"CONNECT" and h.get(b":protocol") == b"websocket"
                self.h3.send_headers(ev.stream_id, [(b":status", b"200" if ok else b"400")], end_stream=not ok)
                self.bufs[ev.stream_id] = (b"", bytearray(), 0)
            elif isinstance(ev, DataReceived) and ev.stream_id in self.bufs:
                buf, partial, first_op = self.bufs[ev.stream_id]
                frames, buf = parse_frames(buf + ev.data, masked=True)
                for fin, op, payload in frames:
                    if op == 0x8:
                        code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else "none"
                        print(f"CLOSED {code}", flush=True)
                        self.h3.send_data(ev.stream_id, server_frame(0x8, payload[:2]), end_stream=True)
                    elif op == 0x9:
                        self.h3.send_data(ev.stream_id, server_frame(0xA, payload), end_stream=False)
                    elif op in (0x0, 0x1, 0x2):
                        if op != 0x0:
                            first_op = op
                        partial.extend(payload)
                        if fin:
                            self.h3.send_data(ev.stream_id, server_frame(first_op, bytes(partial)), end_stream=False)
                            partial = bytearray()
                self.bufs[ev.stream_id] = (buf, partial, first_op)
        self.transmit()


async def origin(args):
    cfg = QuicConfiguration(is_client=False, alpn_protocols=H3_ALPN, max_datagram_frame_size=None)
    cfg.load_cert_chain(args.cert, args.key)
    server = await serve("127.0.0.1", 0, configuration=cfg, create_protocol=Origin)
    port = server._transport.get_extra_info("sockname")[1]
    print(f"PORT {port}", flush=True)
    await asyncio.sleep(args.lifetime)


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("client")
    c.add_argument("--port", type=int, required=True)
    c.add_argument("--ca", required=True)
    c.add_argument("--size", type=int, default=1 << 20)
    c.add_argument("--settings-only", action="store_true")
    s = sub.add_parser("serve")
    s.add_argument("--cert", required=True)
    s.add_argument("--key", required=True)
    s.add_argument("--lifetime", type=float, default=300)
    args = p.parse_args()
    asyncio.run(client(args) if args.cmd == "client" else origin(args))


if __name__ == "__main__":
    sys.exit(main())
