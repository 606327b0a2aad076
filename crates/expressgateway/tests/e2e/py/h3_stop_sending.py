"""HTTP/3 uploads the server answers before reading them all, over aioquic:
which STOP_SENDING (and RESET_STREAM) code does the client receive?

Usage:
    h3_stop_sending.py --ca CERT --port PORT REQUEST [REQUEST ...]

Each REQUEST is "POST:/path:DECLARED:SENT": a request declaring
content-length DECLARED, of which only SENT bytes are sent (the stream is
left open, as an upload still under way). All run concurrently on one
connection. Each waits for its complete response, then up to 2 s more for
a STOP_SENDING on its stream. Prints one JSON object:

    {"responses": [{"path", "status", "stop_sending" (code or null),
      "reset" (code or null)}, ...]}
"""

import argparse
import asyncio
import json
import sys

from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import QuicEvent, StopSendingReceived, StreamReset

from h3_client import report


class Upload:
    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.status = None
        self.stop_sending = None
        self.reset = None
        self.answered = loop.create_future()
        self.stopped = loop.create_future()


class Client(QuicConnectionProtocol):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._http = H3Connection(self._quic)
        self._uploads = {}

    async def upload(self, authority: str, path: str, declared: int, sent: int) -> Upload:
        stream_id = self._quic.get_next_available_stream_id()
        up = Upload()
        self._uploads[stream_id] = up
        headers = [
            (b":method", b"POST"),
            (b":scheme", b"https"),
            (b":authority", authority.encode()),
            (b":path", path.encode()),
            (b"content-length", str(declared).encode()),
        ]
        self._http.send_headers(stream_id, headers, end_stream=False)
        self._http.send_data(stream_id, b"x" * sent, end_stream=False)
        self.transmit()
        await asyncio.wait_for(up.answered, 5)
        try:
            await asyncio.wait_for(asyncio.shield(up.stopped), 2)
        except asyncio.TimeoutError:
            pass
        return up

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, StopSendingReceived):
            up = self._uploads.get(event.stream_id)
            if up and up.stop_sending is None:
                up.stop_sending = event.error_code
                up.stopped.set_result(None)
            return
        if isinstance(event, StreamReset):
            up = self._uploads.get(event.stream_id)
            if up:
                up.reset = event.error_code
                if not up.answered.done():
                    up.answered.set_exception(
                        RuntimeError(f"stream {event.stream_id} reset, code {event.error_code}")
                    )
            return
        for h3_event in self._http.handle_event(event):
            up = self._uploads.get(getattr(h3_event, "stream_id", None))
            if up is None:
                continue
            if isinstance(h3_event, HeadersReceived) and up.status is None:
                for name, value in h3_event.headers:
                    if name == b":status":
                        up.status = int(value)
            if getattr(h3_event, "stream_ended", False) and not up.answered.done():
                up.answered.set_result(None)


async def run(args) -> dict:
    configuration = QuicConfiguration(
        is_client=True, alpn_protocols=H3_ALPN, server_name="localhost"
    )
    configuration.load_verify_locations(cafile=args.ca)
    specs = []
    for r in args.requests:
        method, path, declared, sent = r.split(":")
        assert method == "POST", r
        specs.append((path, int(declared), int(sent)))
    async with connect(
        "127.0.0.1", args.port, configuration=configuration, create_protocol=Client
    ) as client:
        authority = f"localhost:{args.port}"
        ups = await asyncio.gather(*(client.upload(authority, p, d, s) for (p, d, s) in specs))
        client.close()

        return {
            "responses": [
                {"path": p, "status": u.status, "stop_sending": u.stop_sending, "reset": u.reset}
                for (p, _, _), u in zip(specs, ups)
            ]
        }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ca", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--timeout", type=float, default=10.0)
    ap.add_argument("requests", nargs="+")
    report("h3_stop_sending", run, ap.parse_args())


if __name__ == "__main__":
    main()
