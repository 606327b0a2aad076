"""A third-party HTTP/3 client (aioquic) that never reads its response.

Usage:
    h3_stalled_reader.py --ca CERT --port PORT [--path /big] [--timeout 10]

It sends one GET and then grants the server no stream credit past
aioquic's initial window: MAX_STREAM_DATA is never sent (as a client whose
application stopped reading would). Prints one JSON object to stdout:

    {"status": 200, "received": BYTES, "ended": "reset" | "end" | "timeout",
     "reset_code": CODE or null, "ended_after": SECONDS since the request}

Exits 0 whenever it could report; non-zero (reason on stderr) otherwise.
"""

import argparse
import asyncio
import json
import sys
import time

from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import StreamReset

# Never raise a stream's receive window: the peer gets no more credit.
QuicConnection._write_stream_limits = lambda self, builder, space, stream: None


class Stalled(QuicConnectionProtocol):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._http = H3Connection(self._quic)
        self.stream_id = None
        self.status = None
        self.received = 0
        self.done = asyncio.get_running_loop().create_future()

    def get(self, authority: str, path: str) -> None:
        self.stream_id = self._quic.get_next_available_stream_id()
        headers = [
            (b":method", b"GET"),
            (b":scheme", b"https"),
            (b":authority", authority.encode()),
            (b":path", path.encode()),
            (b"user-agent", b"aioquic-stalled-reader"),
        ]
        self._http.send_headers(self.stream_id, headers, end_stream=True)
        self.transmit()

    def quic_event_received(self, event) -> None:
        if isinstance(event, StreamReset) and event.stream_id == self.stream_id:
            if not self.done.done():
                self.done.set_result(("reset", event.error_code))
            return
        for h3_event in self._http.handle_event(event):
            if getattr(h3_event, "stream_id", None) != self.stream_id:
                continue
            if isinstance(h3_event, HeadersReceived):
                for name, value in h3_event.headers:
                    if name == b":status":
                        self.status = int(value)
            elif isinstance(h3_event, DataReceived):
                self.received += len(h3_event.data)
            if getattr(h3_event, "stream_ended", False) and not self.done.done():
                self.done.set_result(("end", None))


async def run(args) -> dict:
    configuration = QuicConfiguration(
        is_client=True, alpn_protocols=H3_ALPN, server_name=args.server_name
    )
    configuration.load_verify_locations(cafile=args.ca)
    async with connect(
        args.host, args.port, configuration=configuration, create_protocol=Stalled
    ) as client:
        started = time.monotonic()
        client.get(f"{args.server_name}:{args.port}", args.path)
        try:
            ended, code = await asyncio.wait_for(asyncio.shield(client.done), args.timeout)
        except asyncio.TimeoutError:
            ended, code = "timeout", None
        result = {
            "status": client.status,
            "received": client.received,
            "ended": ended,
            "reset_code": code,
            "ended_after": time.monotonic() - started,
        }
        client.close()
        return result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ca", required=True, help="PEM file of the CA to trust")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--server-name", default="localhost")
    ap.add_argument("--path", default="/big")
    ap.add_argument("--timeout", type=float, default=10.0)
    args = ap.parse_args()
    try:
        result = asyncio.run(asyncio.wait_for(run(args), args.timeout + 5))
    except Exception as e:  # report any failure plainly to the Rust side
        print(f"h3_stalled_reader: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(2)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
