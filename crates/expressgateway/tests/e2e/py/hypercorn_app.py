"""A tiny ASGI app for hypercorn, used as a third-party HTTP/3 backend by
the e2e tests.

GET  <path>  -> 200 "hypercorn <path>"
WebSocket    -> echo (over HTTP/2 this is RFC 8441), subprotocol "chat.v2"
                chosen when offered
POST <path>  -> 200 with the request body echoed back

Every answer carries `x-backend: hypercorn` and `x-http-version: <the
HTTP version hypercorn served the request over>` (so a test can tell the
gateway reached it over HTTP/3).

Run: hypercorn --workers 0 --certfile C --keyfile K -b 127.0.0.1:0 \
         --quic-bind 127.0.0.1:0 /path/to/hypercorn_app:app
"""


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] == "websocket":
        await websocket_echo(scope, receive, send)
        return
    if scope["type"] != "http":
        return

    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        body.extend(message.get("body", b""))
        if not message.get("more_body", False):
            break

    if scope["method"] == "POST":
        answer = bytes(body)
    else:
        answer = f"hypercorn {scope['path']}".encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/octet-stream"),
                (b"content-length", str(len(answer)).encode()),
                (b"x-backend", b"hypercorn"),
                (b"x-http-version", scope.get("http_version", "?").encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": answer})


async def websocket_echo(scope, receive, send):
    offered = scope.get("subprotocols", [])
    accept = {"type": "websocket.accept"}
    if "chat.v2" in offered:
        accept["subprotocol"] = "chat.v2"
    while True:
        message = await receive()
        if message["type"] == "websocket.connect":
            await send(accept)
        elif message["type"] == "websocket.receive":
            out = {"type": "websocket.send"}
            if message.get("bytes") is not None:
                out["bytes"] = message["bytes"]
            else:
                out["text"] = message.get("text", "")
            await send(out)
        else:
            return
