"""gRPC over HTTP/3 with aioquic (grpcio cannot speak HTTP/3): each CALL is
sent as a gRPC request (content-type application/grpc, te: trailers, one
length-prefixed message) on one QUIC connection.

Usage: grpc_h3.py --ca CERT --port PORT CALL...
  CALL = PATH:PAYLOAD[:GRPC-TIMEOUT], e.g. /test.Echo/Unary:hello:20S
  PAYLOAD "a|b|c" is three messages (client streaming), sent at once;
  ">a|b" sends each message only once the previous one's answer arrived
  (bidi, interleaved), then ends the request.
Prints {"calls": [{"path", "status", "headers", "trailers", "messages"
(hex)}]}. Exits non-zero when a call does not complete.
"""

import argparse
import asyncio
import json
import struct
import sys

sys.path.insert(0, __import__("os").path.dirname(__file__))

from aioquic.asyncio.client import connect  # noqa: E402
from aioquic.h3.connection import H3_ALPN  # noqa: E402
from aioquic.quic.configuration import QuicConfiguration  # noqa: E402

from h3_client import Exchange, H3Client  # noqa: E402


def messages(body: bytes):
    out, i = [], 0
    while i + 5 <= len(body):
        (n,) = struct.unpack(">I", body[i + 1 : i + 5])
        out.append(body[i + 5 : i + 5 + n].hex())
        i += 5 + n
    return out


async def answered(ex, n):
    """Until the response holds n messages (or ended)."""
    while len(messages(bytes(ex.body))) < n and not ex.done.done():
        await asyncio.sleep(0.01)


async def call(client, authority, spec):
    path, payload, *timeout = spec.split(":")
    sid = client._quic.get_next_available_stream_id()
    ex = Exchange()
    client._exchanges[sid] = ex
    headers = [
        (b":method", b"POST"),
        (b":scheme", b"https"),
        (b":authority", authority.encode()),
        (b":path", path.encode()),
        (b"content-type", b"application/grpc"),
        (b"te", b"trailers"),
    ]
    if timeout:
        headers.append((b"grpc-timeout", timeout[0].encode()))
    interleave = payload.startswith(">")
    parts = [p.encode() for p in payload.lstrip(">").split("|")]
    framed = [struct.pack(">BI", 0, len(p)) + p for p in parts]
    client._http.send_headers(sid, headers)
    if interleave:
        for i, frame in enumerate(framed):
            if ex.done.done():
                break
            client._http.send_data(sid, frame, end_stream=False)
            client.transmit()
            await asyncio.wait_for(answered(ex, i + 1), 20)
        if not ex.done.done():
            try:
                client._http.send_data(sid, b"", end_stream=True)
            except Exception:
                pass  # the server ended the call (and this stream) first
    else:
        for i, frame in enumerate(framed):
            client._http.send_data(sid, frame, end_stream=i == len(framed) - 1)
    client.transmit()
    await asyncio.wait_for(ex.done, 20)
    return {
        "path": path,
        "status": ex.status,
        "headers": ex.headers,
        "trailers": ex.trailers,
        "messages": messages(bytes(ex.body)),
    }


async def run(args):
    conf = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, server_name="localhost")
    conf.load_verify_locations(cafile=args.ca)
    async with connect("127.0.0.1", args.port, configuration=conf, create_protocol=H3Client) as c:
        authority = f"localhost:{args.port}"
        return {"calls": [await call(c, authority, s) for s in args.calls]}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--ca", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("calls", nargs="+")
    args = p.parse_args()
    print(json.dumps(asyncio.run(run(args))))


if __name__ == "__main__":
    main()
