"""A third-party HTTP/3 client for the e2e tests, built on aioquic.

Usage:
    h3_client.py --ca CERT --port PORT [--host 127.0.0.1] [--server-name localhost]
                 REQUEST [REQUEST ...]

Each REQUEST is either "GET:/path" or "POST:/path:SIZE" (SIZE bytes of a
deterministic pattern are uploaded). All requests share one QUIC connection
and run concurrently. Prints one JSON object to stdout:

    {"alpn": "h3", "responses": [{"method", "path", "status", "headers",
      "trailers", "body" (text, only under 4 KiB), "body_len", "body_sha256",
      "sent_len", "sent_sha256", "checksum_ok"}, ...]}

Exits 0 when every request got a complete response; non-zero (with the
reason on stderr) otherwise.
"""

import argparse
import asyncio
import hashlib
import json
import sys

from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import ConnectionTerminated, QuicEvent, StreamReset


def pattern(size: int) -> bytes:
    """SIZE bytes that are not all alike, so reordering shows up."""
    block = bytes((i * 31 + 7) % 251 for i in range(4096))
    return (block * (size // len(block) + 1))[:size]


class Exchange:
    def __init__(self) -> None:
        self.status = None
        self.headers = {}
        self.trailers = {}
        self.body = bytearray()
        self.done = asyncio.get_running_loop().create_future()


class H3Client(QuicConnectionProtocol):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._http = H3Connection(self._quic)
        self._exchanges = {}

    async def request(self, method: str, authority: str, path: str, body: bytes) -> Exchange:
        stream_id = self._quic.get_next_available_stream_id()
        exchange = Exchange()
        self._exchanges[stream_id] = exchange
        headers = [
            (b":method", method.encode()),
            (b":scheme", b"https"),
            (b":authority", authority.encode()),
            (b":path", path.encode()),
            (b"user-agent", b"aioquic-e2e"),
        ]
        if body:
            headers.append((b"content-length", str(len(body)).encode()))
        self._http.send_headers(stream_id, headers, end_stream=not body)
        if body:
            self._http.send_data(stream_id, body, end_stream=True)
        self.transmit()
        await exchange.done
        return exchange

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, StreamReset):
            ex = self._exchanges.get(event.stream_id)
            if ex and not ex.done.done():
                ex.done.set_exception(
                    RuntimeError(f"stream {event.stream_id} reset, code {event.error_code}")
                )
            return
        if isinstance(event, ConnectionTerminated):
            for ex in self._exchanges.values():
                if not ex.done.done():
                    ex.done.set_exception(
                        RuntimeError(
                            f"connection closed: code {event.error_code} {event.reason_phrase!r}"
                        )
                    )
            return
        for h3_event in self._http.handle_event(event):
            ex = self._exchanges.get(getattr(h3_event, "stream_id", None))
            if ex is None:
                continue
            if isinstance(h3_event, HeadersReceived):
                # The first HEADERS frame is the response head; a later one
                # carries trailers.
                into = ex.headers if ex.status is None else ex.trailers
                for name, value in h3_event.headers:
                    if name == b":status":
                        ex.status = int(value)
                    else:
                        into[name.decode()] = value.decode(errors="replace")
            elif isinstance(h3_event, DataReceived):
                ex.body.extend(h3_event.data)
            if getattr(h3_event, "stream_ended", False) and not ex.done.done():
                ex.done.set_result(None)


def parse_request(spec: str):
    parts = spec.split(":")
    method = parts[0].upper()
    if method == "GET" and len(parts) == 2:
        return method, parts[1], b""
    if method == "POST" and len(parts) == 3:
        return method, parts[1], pattern(int(parts[2]))
    raise SystemExit(f"bad request spec {spec!r}: use GET:/path or POST:/path:SIZE")


async def run(args) -> dict:
    configuration = QuicConfiguration(
        is_client=True, alpn_protocols=H3_ALPN, server_name=args.server_name
    )
    configuration.load_verify_locations(cafile=args.ca)
    requests = [parse_request(r) for r in args.requests]
    authority = f"{args.server_name}:{args.port}"
    async with connect(
        args.host, args.port, configuration=configuration, create_protocol=H3Client
    ) as client:
        alpn = client._quic.tls.alpn_negotiated
        exchanges = await asyncio.gather(
            *(client.request(m, authority, p, b) for (m, p, b) in requests)
        )
        out = []
        for (method, path, sent), ex in zip(requests, exchanges):
            body = bytes(ex.body)
            item = {
                "method": method,
                "path": path,
                "status": ex.status,
                "headers": ex.headers,
                "trailers": ex.trailers,
                "body_len": len(body),
                "body_sha256": hashlib.sha256(body).hexdigest(),
                "sent_len": len(sent),
                "sent_sha256": hashlib.sha256(sent).hexdigest(),
                "checksum_ok": body == sent if sent else None,
            }
            if len(body) < 4096:
                item["body"] = body.decode(errors="replace")
            out.append(item)
        client.close()
        return {"alpn": alpn, "responses": out}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ca", required=True, help="PEM file of the CA to trust")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--server-name", default="localhost")
    ap.add_argument("--timeout", type=float, default=8.0)
    ap.add_argument("requests", nargs="+")
    report("h3_client", run, ap.parse_args())


def report(name: str, run, args) -> None:
    """Run `run(args)` within `args.timeout` and print its JSON result;
    any failure is reported plainly to the Rust side, with a non-zero exit."""
    try:
        result = asyncio.run(asyncio.wait_for(run(args), args.timeout))
    except asyncio.TimeoutError:
        print(f"{name}: no complete answer within {args.timeout} s", file=sys.stderr)
        sys.exit(3)
    except Exception as e:
        print(f"{name}: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(2)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
