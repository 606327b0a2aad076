#!/usr/bin/env python3
"""Self cost per function from a callgrind dump (bench/ir.sh keeps them
with KEEP_WORK=1): callgrind_annotate 3.19 folds a zeroed-then-dumped
part of a multi-threaded process into `clone`, so this reads the file
itself. Usage: callgrind_top.py FILE [N] [REQUESTS] [--by-crate]"""
import re
import sys
from collections import Counter


def self_costs(path):
    costs, fn, after_call = Counter(), "?", False
    for line in open(path, errors="replace"):
        if line.startswith("fn="):
            fn = re.sub(r"^\(\d+\)\s*", "", line[3:].strip()) or fn
            after_call = False
        elif line.startswith("calls="):
            after_call = True
        elif line[:1].isdigit() or line[:1] in "+-*":
            parts = line.split()
            if len(parts) >= 2 and not after_call:
                costs[fn] += int(parts[1])
            after_call = False
    return costs


# Symbol prefix -> the layer it belongs to, first match wins.
LAYERS = [
    ("crypto", ("ring::", "aws_lc", "ring_core", "rustls::crypto", "GFp_", "aes_", "chacha", "gcm_", "sha256", "x25519")),
    ("tls (rustls)", ("rustls::", "tokio_rustls::")),
    ("quic (quinn)", ("quinn", "quinn_proto::", "quinn_udp::")),
    ("h3", ("h3::", "h3_quinn::")),
    ("h2", ("h2::",)),
    ("hyper", ("hyper::", "hyper_util::", "httparse::")),
    ("http types", ("http::", "http_body", "bytes::")),
    ("tokio", ("tokio::",)),
    ("ours (eg_*)", ("eg_",)),
    ("malloc/free", ("malloc", "_int_malloc", "_int_free", "free", "realloc", "mi_", "_mi_", "cfree", "__rust_alloc", "__rust_dealloc", "__rustc::")),
    ("memcpy/memmove", ("__memcpy", "__memmove", "__memset", "memcpy", "memmove")),
]


def layer_of(fn):
    name = re.sub(r"^<", "", fn)
    for layer, prefixes in LAYERS:
        if name.startswith(prefixes):
            return layer
    return "other (std, core, libc)"


def main():
    path = sys.argv[1]
    args = [a for a in sys.argv[2:] if not a.startswith("--")]
    top = int(args[0]) if args else 30
    requests = int(args[1]) if len(args) > 1 else 0
    costs = self_costs(path)
    if "--by-crate" in sys.argv:
        layers = Counter()
        for fn, c in costs.items():
            layers[layer_of(fn)] += c
        costs = layers
    total = sum(costs.values())
    print(f"total {total:,} Ir" + (f", {total // requests:,} per request" if requests else ""))
    for fn, c in costs.most_common(top):
        per = f"{c // requests:>7,}/req " if requests else ""
        print(f"{100 * c / total:5.1f}% {per}{fn[:150]}")


if __name__ == "__main__":
    main()
