"""gRPC peers for the e2e tests: a grpcio server (h2c) and a grpcio client.

The test service is defined with grpc's generic handlers and raw-bytes
messages (no serializers), so no protoc step is needed.

  grpc_peer.py server [--lifetime S]
      Serves `test.Echo` and grpc.health.v1 on 127.0.0.1:0, prints
      {"port": N} on stdout, and exits after --lifetime seconds or when
      stdin closes. Health: "" NOT_SERVING (so a SERVING answer for "" can
      only be the gateway's own), "test.Echo" SERVING.

  grpc_peer.py client --port N --ca FILE SCENARIO...
      Runs each scenario through the gateway (TLS, HTTP/2) and prints one
      JSON object, keyed by scenario.
"""

import argparse
import json
import sys
import threading
import time
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

SVC = "test.Echo"
DETAILS = b"\x08\x05\x12\x0fstatus-details!"


def unary(req, ctx):
    if req.startswith(b"fail"):
        ctx.set_trailing_metadata(
            (("x-trailer", "unary-failed"), ("grpc-status-details-bin", DETAILS))
        )
        ctx.abort(grpc.StatusCode.NOT_FOUND, "no such thing")
    ctx.set_trailing_metadata((("x-trailer", "unary-done"),))
    return req


def deadline(req, ctx):
    meta = {k: v for k, v in ctx.invocation_metadata()}
    return json.dumps(
        {"remaining": ctx.time_remaining(), "grpc-timeout": meta.get("grpc-timeout")}
    ).encode()


def sleep(req, ctx):
    time.sleep(float(req.decode()))
    return b"late"


def server_stream(req, ctx):
    n, gap = req.decode().replace(",", ":").split(":")
    for i in range(int(n)):
        yield f"m{i}".encode()
        time.sleep(float(gap))
    ctx.set_trailing_metadata((("x-trailer", "stream-done"),))


def client_stream(it, ctx):
    ctx.set_trailing_metadata((("x-trailer", "client-stream-done"),))
    return b"|".join(list(it))


def bidi(it, ctx):
    for m in it:
        yield m.upper()
    ctx.set_trailing_metadata((("x-trailer", "bidi-done"),))


def serve(args):
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "Deadline": grpc.unary_unary_rpc_method_handler(deadline),
        "Sleep": grpc.unary_unary_rpc_method_handler(sleep),
        "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream),
        "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream),
        "Bidi": grpc.stream_stream_rpc_method_handler(bidi),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SVC, handlers),))
    hs = health.HealthServicer()
    hs.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    hs.set(SVC, health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(hs, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(json.dumps({"port": port}), flush=True)
    done = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
    done.wait(args.lifetime)
    server.stop(0)


def outcome(call):
    """Code, details and trailing metadata of a finished call or error."""
    trailers = {}
    for k, v in call.trailing_metadata() or ():
        trailers[k] = v.hex() if isinstance(v, bytes) else v
    return {"code": call.code().name, "details": call.details(), "trailers": trailers}


def run_unary(ch, method, payload, timeout=None):
    fn = ch.unary_unary(f"/{SVC}/{method}")
    try:
        resp, call = fn.with_call(payload, timeout=timeout)
        out = outcome(call)
        out["response"] = resp.decode(errors="replace")
        return out
    except grpc.RpcError as e:
        return outcome(e)


def scenario(ch, name):
    if name == "calls":
        out = {"unary": run_unary(ch, "Unary", b"hello"), "fail": run_unary(ch, "Unary", b"fail")}
        ss = ch.unary_stream(f"/{SVC}/ServerStream")(b"5:0", timeout=20)
        out["server_stream"] = {"messages": [m.decode() for m in ss], **outcome(ss)}
        cs, call = ch.stream_unary(f"/{SVC}/ClientStream").with_call(
            iter([b"a", b"b", b"c"]), timeout=20
        )
        out["client_stream"] = {"response": cs.decode(), **outcome(call)}
        bd = ch.stream_stream(f"/{SVC}/Bidi")(iter([b"x", b"y"]), timeout=20)
        out["bidi"] = {"messages": [m.decode() for m in bd], **outcome(bd)}
        return out
    if name == "deadline":
        res = {}
        for label, t in (("none", None), ("long", 3600), ("short", 2)):
            r = run_unary(ch, "Deadline", b"", timeout=t)
            r["seen"] = json.loads(r.get("response") or "null")
            res[label] = r
        return res
    if name == "health":
        stub = health_pb2_grpc.HealthStub(ch)
        res = {}
        for svc in ("", SVC, "no.such.Service"):
            try:
                r = stub.Check(health_pb2.HealthCheckRequest(service=svc), timeout=10)
                res[svc] = health_pb2.HealthCheckResponse.ServingStatus.Name(r.status)
            except grpc.RpcError as e:
                res[svc] = e.code().name
        return res
    if name == "unary":
        return run_unary(ch, "Unary", b"hello", timeout=20)
    if name == "client_stream":
        fn = ch.stream_unary(f"/{SVC}/ClientStream")
        try:
            cs, call = fn.with_call(iter([b"a", b"b", b"c"]), timeout=20)
            return {"response": cs.decode(), **outcome(call)}
        except grpc.RpcError as e:
            return outcome(e)
    if name == "echo":
        fn = ch.unary_unary(f"/{SVC}/Unary")
        resp, call = fn.with_call(b"hello", timeout=20)
        bd = ch.stream_stream(f"/{SVC}/Bidi")(iter([b"x", b"y"]), timeout=20)
        return {
            "response": resp.decode(),
            "initial": dict(call.initial_metadata()),
            **outcome(call),
            "bidi": [m.decode() for m in bd],
        }
    if name == "big":
        # 4 KiB, past a small max_request_body_bytes (grpcio sends no
        # content-length: the cap trips as the body streams).
        return run_unary(ch, "Unary", b"x" * 4096, timeout=20)
    if name == "busy":
        # One call in flight (a server stream that has sent its first
        # message), then a unary call beside it.
        ss = ch.unary_stream(f"/{SVC}/ServerStream")(b"3:0.5", timeout=20)
        first = next(ss).decode()
        out = run_unary(ch, "Unary", b"hello", timeout=20)
        rest = [m.decode() for m in ss]
        out["held"] = {"messages": [first, *rest], **outcome(ss)}
        return out
    if name.startswith("raw:"):
        # A method path outside test.Echo (a non-gRPC backend's route).
        fn = ch.unary_unary(name.split(":", 1)[1])
        started = time.monotonic()
        try:
            _, call = fn.with_call(b"")
            out = outcome(call)
        except grpc.RpcError as e:
            out = outcome(e)
        out["seconds"] = time.monotonic() - started
        return out
    if name.startswith("sleep:"):
        return run_unary(ch, "Sleep", name.split(":", 1)[1].encode())
    if name.startswith("stream:"):
        started = time.monotonic()
        ss = ch.unary_stream(f"/{SVC}/ServerStream")(name.split(":", 1)[1].encode())
        msgs = []
        try:
            for m in ss:
                msgs.append(m.decode())
        except grpc.RpcError:
            pass
        return {"messages": msgs, "seconds": time.monotonic() - started, **outcome(ss)}
    raise SystemExit(f"unknown scenario {name}")


def client(args):
    ca = open(args.ca, "rb").read()
    creds = grpc.ssl_channel_credentials(root_certificates=ca)
    opts = (("grpc.ssl_target_name_override", "localhost"), ("grpc.enable_http_proxy", 0))
    with grpc.secure_channel(f"127.0.0.1:{args.port}", creds, options=opts) as ch:
        print(json.dumps({s: scenario(ch, s) for s in args.scenarios}))


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("server")
    s.add_argument("--lifetime", type=float, default=120)
    c = sub.add_parser("client")
    c.add_argument("--port", type=int, required=True)
    c.add_argument("--ca", required=True)
    c.add_argument("scenarios", nargs="+")
    args = p.parse_args()
    serve(args) if args.cmd == "server" else client(args)


if __name__ == "__main__":
    main()
