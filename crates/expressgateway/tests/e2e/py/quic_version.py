"""QUIC version checks for the e2e tests, built on aioquic (RFC 9369 v2, RFC 9368).

Usage:
    quic_version.py get    --ca CERT --port PORT --versions V[,V...] [--original V]
    quic_version.py stall  --ca CERT --port PORT [--wait SECONDS]
    quic_version.py serve  --cert CERT --key KEY [--versions V[,V...]]

Versions are hex ("0x1", "0x6b3343cf"). `--versions` are the client's
supported versions (its version_information Available Versions, best
first); `--original` the version of its first Initial (default: the first
of `--versions`).

get: one HTTP/3 GET / on one connection. Prints
    {"original": "0x1", "version": "0x6b3343cf", "status": 200, "body": "..."}
where "version" is the version the connection ran in after the handshake.

stall: a handshake that never completes, as on a path that loses everything
the server sends: the client repeats its first Initial every half second
(as its PTO would) and never sends anything else, so the server's handshake
deadline fires. The repeats also give the server the anti-amplification
budget (RFC 9000 §8.1) to send its CONNECTION_CLOSE. The client reads what
the server sends, never answers, and prints the CONNECTION_CLOSE frames it
received, from aioquic's qlog trace:
    {"closes": [{"error_space": "transport", "error_code": 2, "reason": "..."}]}

serve: an HTTP/3 server (a backend) on 127.0.0.1, port chosen by the system;
prints "PORT N" once listening, then answers every request with 200 and
the body "version=0x..." naming the version that connection runs in. It
serves until killed.

Exits non-zero (reason on stderr) when the GET fails or nothing was closed.
"""

import argparse
import asyncio
import json
import socket
import sys
import time

from aioquic.asyncio.client import connect
from aioquic.asyncio.server import serve as quic_serve
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.logger import QuicLogger


def versions(text: str) -> list:
    return [int(v, 16) for v in text.split(",") if v]


class Getter(QuicConnectionProtocol):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._http = H3Connection(self._quic)
        self.status = None
        self.body = bytearray()
        self.done = asyncio.get_running_loop().create_future()

    def get(self, authority: str) -> None:
        stream_id = self._quic.get_next_available_stream_id()
        self._http.send_headers(
            stream_id,
            [
                (b":method", b"GET"),
                (b":scheme", b"https"),
                (b":authority", authority.encode()),
                (b":path", b"/"),
            ],
            end_stream=True,
        )
        self.transmit()

    def quic_event_received(self, event) -> None:
        for h3 in self._http.handle_event(event):
            if isinstance(h3, HeadersReceived):
                for name, value in h3.headers:
                    if name == b":status":
                        self.status = int(value)
            if isinstance(h3, DataReceived):
                self.body.extend(h3.data)
            if isinstance(h3, (HeadersReceived, DataReceived)) and h3.stream_ended:
                if not self.done.done():
                    self.done.set_result(True)


async def get(args) -> int:
    supported = versions(args.versions)
    config = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN)
    config.load_verify_locations(args.ca)
    config.server_name = "localhost"
    config.supported_versions = supported
    config.original_version = int(args.original, 16) if args.original else supported[0]
    async with connect(
        args.host, args.port, configuration=config, create_protocol=Getter
    ) as client:
        client.get("localhost")
        await asyncio.wait_for(client.done, timeout=args.wait)
        # aioquic has no public accessor for the version in use; `_version` is
        # what its compatible version negotiation updates.
        report = {
            "original": hex(config.original_version),
            "version": hex(client._quic._version),
            "status": client.status,
            "body": client.body.decode(errors="replace"),
        }
    print(json.dumps(report))
    return 0 if report["status"] == 200 else 1


# How often the stalled client repeats its Initial: the order of a first PTO.
REPEAT_SECONDS = 0.5


def stall(args) -> int:
    config = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN)
    config.load_verify_locations(args.ca)
    config.server_name = "localhost"
    logger = QuicLogger()
    config.quic_logger = logger
    conn = QuicConnection(configuration=config)
    addr = (args.host, args.port)
    conn.connect(addr, now=time.time())
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    first_flight = [data for data, _ in conn.datagrams_to_send(now=time.time())]
    deadline = time.time() + args.wait
    next_repeat = time.time()
    closes = []
    while time.time() < deadline and not closes:
        if time.time() >= next_repeat:
            for data in first_flight:
                sock.sendto(data, addr)
            next_repeat = time.time() + REPEAT_SECONDS
        sock.settimeout(max(0.01, min(next_repeat, deadline) - time.time()))
        try:
            data, peer = sock.recvfrom(65536)
        except socket.timeout:
            continue
        # Read what the server sends, but never answer it (no datagrams_to_send,
        # no timers): to the server this client never gets past its Initial.
        conn.receive_datagram(data, peer, now=time.time())
        for trace in logger.to_dict()["traces"]:
            for event in trace["events"]:
                if event.get("name") != "transport:packet_received":
                    continue
                for frame in event["data"].get("frames", []):
                    if frame.get("frame_type") == "connection_close":
                        closes.append(
                            {
                                "packet_type": event["data"]["header"].get("packet_type"),
                                "error_space": frame.get("error_space"),
                                "error_code": frame.get("error_code"),
                                "reason": frame.get("reason"),
                            }
                        )
    print(json.dumps({"closes": closes}))
    return 0 if closes else 1


class Answerer(QuicConnectionProtocol):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._http = H3Connection(self._quic)

    def quic_event_received(self, event) -> None:
        for h3 in self._http.handle_event(event):
            if isinstance(h3, HeadersReceived) and h3.stream_ended:
                self.answer(h3.stream_id)
            elif isinstance(h3, DataReceived) and h3.stream_ended:
                self.answer(h3.stream_id)

    def answer(self, stream_id: int) -> None:
        body = f"version={hex(self._quic._version)}".encode()
        self._http.send_headers(
            stream_id,
            [(b":status", b"200"), (b"content-length", str(len(body)).encode())],
        )
        self._http.send_data(stream_id, body, end_stream=True)
        self.transmit()


async def serve(args) -> int:
    config = QuicConfiguration(is_client=False, alpn_protocols=H3_ALPN)
    config.load_cert_chain(args.cert, args.key)
    config.supported_versions = versions(args.versions)
    server = await quic_serve("127.0.0.1", 0, configuration=config, create_protocol=Answerer)
    port = server._transport.get_extra_info("sockname")[1]
    print(f"PORT {port}", flush=True)
    await asyncio.Future()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["get", "stall", "serve"])
    parser.add_argument("--ca")
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int)
    parser.add_argument("--versions", default="0x1,0x6b3343cf")
    parser.add_argument("--original")
    parser.add_argument("--wait", type=float, default=8.0)
    args = parser.parse_args()
    if args.mode == "get":
        return asyncio.run(get(args))
    if args.mode == "serve":
        return asyncio.run(serve(args))
    return stall(args)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as e:  # the test prints stderr on failure
        print(f"quic_version.py: {e!r}", file=sys.stderr)
        sys.exit(2)
