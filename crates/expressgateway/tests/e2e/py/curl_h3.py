"""A second, independent HTTP/3 client for the e2e tests: libcurl with
ngtcp2 + nghttp3, through PyPI `curl_cffi` (Debian's curl has no HTTP/3).

Usage:
    curl_h3.py [--ca CERT] --port PORT REQUEST [REQUEST ...]

Without --ca the server certificate is not verified (the demo's own).

Each REQUEST is "GET:/path" or "POST:/path:SIZE" (SIZE bytes of a fixed
pattern uploaded). All run concurrently over HTTP/3 only (V3ONLY: no
fallback to TCP). Prints one JSON object:

    {"responses": [{"method", "path", "status", "http_version", "body"
      (text, under 4 KiB), "body_len", "body_sha256", "sent_sha256",
      "error"}, ...]}

Exits 0 when every request got a response; 1 otherwise (errors in JSON).
"""

import argparse
import asyncio
import hashlib
import json
import sys

from curl_cffi import CurlHttpVersion
from curl_cffi.requests import AsyncSession


def pattern(size: int) -> bytes:
    block = bytes((i * 31 + 7) % 251 for i in range(4096))
    return (block * (size // len(block) + 1))[:size]


async def one(session, base, spec):
    parts = spec.split(":")
    method, path = parts[0], parts[1]
    body = pattern(int(parts[2])) if method == "POST" else None
    out = {"method": method, "path": path}
    if body is not None:
        out["sent_sha256"] = hashlib.sha256(body).hexdigest()
    try:
        r = await session.request(
            method,
            base + path,
            data=body,
            http_version=CurlHttpVersion.V3ONLY,
            timeout=50,
        )
        content = r.content
        out.update(
            status=r.status_code,
            http_version=int(r.http_version),
            body_len=len(content),
            body_sha256=hashlib.sha256(content).hexdigest(),
        )
        if len(content) < 4096:
            out["body"] = content.decode("utf-8", "replace")
    except Exception as e:  # the test reports every failure, not the first
        out["error"] = str(e)
    return out


async def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--ca")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("requests", nargs="+")
    args = p.parse_args()
    base = f"https://localhost:{args.port}"
    async with AsyncSession(verify=args.ca or False, max_clients=64) as s:
        responses = await asyncio.gather(*(one(s, base, spec) for spec in args.requests))
    print(json.dumps({"responses": responses}))
    return 0 if all("error" not in r for r in responses) else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
