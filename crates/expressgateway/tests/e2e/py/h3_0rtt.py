"""0-RTT through the HTTP/3 front, driven by aioquic.

Usage:
    h3_0rtt.py --ca CERT --port PORT [--resumes N] [--save-ticket F | --load-ticket F]
               REQUEST [REQUEST ...]

A first connection GETs /warm and keeps the session ticket the server
sends. Then N connections (default 2) resume with that same ticket and
send every REQUEST ("GET:/path" or "POST:/path:SIZE") before their
handshake completes, i.e. in 0-RTT early data when the server allows it.
The second and later ones replay a ticket already used: a server with
single-use tickets must refuse their early data. --save-ticket F only
warms up and keeps the ticket in F; --load-ticket F skips the warm-up and
resumes with the ticket from F (so a test can reload the server between).

Prints one JSON object:
    {"ticket_allows_early_data": bool,
     "resumes": [{"early_data_accepted", "session_resumed",
                  "responses": [{"method", "path", "status", "body"}]}]}
Exits 0 when every request got a complete response.
"""

import argparse
import asyncio
import pickle

from aioquic.asyncio.client import connect
from aioquic.h3.connection import H3_ALPN
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import HandshakeCompleted

from h3_client import H3Client, parse_request, report


class Resuming(H3Client):
    """Records how the handshake ended: was early data accepted?"""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.handshake = asyncio.get_running_loop().create_future()

    def quic_event_received(self, event) -> None:
        if isinstance(event, HandshakeCompleted) and not self.handshake.done():
            self.handshake.set_result(
                {
                    "early_data_accepted": event.early_data_accepted,
                    "session_resumed": event.session_resumed,
                }
            )
        super().quic_event_received(event)


def configuration(args, ticket=None) -> QuicConfiguration:
    c = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, server_name="localhost")
    c.load_verify_locations(cafile=args.ca)
    c.session_ticket = ticket
    return c


async def warm_up(args, authority):
    tickets = []
    async with connect(
        "127.0.0.1",
        args.port,
        configuration=configuration(args),
        create_protocol=H3Client,
        session_ticket_handler=tickets.append,
    ) as warm:
        await warm.request("GET", authority, "/warm", b"")
        for _ in range(250):
            if tickets:
                break
            await asyncio.sleep(0.02)
        warm.close()
    if not tickets:
        raise RuntimeError("the server sent no session ticket")
    return tickets[0]


async def run(args) -> dict:
    authority = f"localhost:{args.port}"
    if args.load_ticket:
        with open(args.load_ticket, "rb") as f:
            ticket = pickle.load(f)
    else:
        ticket = await warm_up(args, authority)
    if args.save_ticket:
        with open(args.save_ticket, "wb") as f:
            pickle.dump(ticket, f)
        return {"ticket_allows_early_data": ticket.max_early_data_size is not None}
    requests = [parse_request(r) for r in args.requests]
    resumes = []
    for _ in range(args.resumes):
        async with connect(
            "127.0.0.1",
            args.port,
            configuration=configuration(args, ticket),
            create_protocol=Resuming,
            wait_connected=False,
        ) as client:
            # Sent before the handshake completes: 0-RTT when allowed.
            exchanges = await asyncio.gather(
                *(client.request(m, authority, p, b) for (m, p, b) in requests)
            )
            outcome = await client.handshake
            outcome["responses"] = [
                {
                    "method": m,
                    "path": p,
                    "status": ex.status,
                    "body": bytes(ex.body).decode(errors="replace"),
                }
                for (m, p, _), ex in zip(requests, exchanges)
            ]
            resumes.append(outcome)
            client.close()
    return {
        "ticket_allows_early_data": ticket.max_early_data_size is not None,
        "resumes": resumes,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ca", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--resumes", type=int, default=2)
    ap.add_argument("--save-ticket")
    ap.add_argument("--load-ticket")
    ap.add_argument("--timeout", type=float, default=20.0)
    ap.add_argument("requests", nargs="*")
    report("h3_0rtt", run, ap.parse_args())


if __name__ == "__main__":
    main()
