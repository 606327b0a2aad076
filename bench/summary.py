"""bench/run.sh's summary: ratios of the gateway to its best peer per case,
the issue's goals met or not, and the rows appended to bench/RESULTS.md.

  summary.py ROWS STAMP COMMIT RESULTS_MD

ROWS: one tab-separated line per case and proxy, as bench/measure.sh's
`record` writes them: path case proxy rate unit p50 p99 cpu cpu_unit rss
up reuse errors.
"""

import os
import sys

COLS = "path case proxy rate unit p50 p99 cpu cpu_unit rss up reuse errors".split()

HEADER = """# Benchmark results

Rows appended by `bash bench/run.sh [path...]`, one per case and proxy, with
the run's UTC date, the commit (`-dirty`: uncommitted changes) and the
measured seconds per case (`s`). How to run:

    bash bench/run.sh                        # every path, 10 s per case
    bash bench/run.sh h1 h2                  # a subset
    SECONDS_PER_CASE=2 REBUILD=0 bash bench/run.sh idle

The top of bench/run.sh lists the paths, the knobs and how each figure is
measured.

Set-up: loopback only; the proxy under test pinned to CPU 0 (one worker:
gateway `worker_threads = 1`, nginx `worker_processes 1`, HAProxy
`nbthread 1`, caddy `GOMAXPROCS=1`), origin and load tool on CPU 1; each
case runs a 2 s warm-up, then 10 s measured unless the run set
SECONDS_PER_CASE. Machine of the rows so far: 2-core Intel Xeon VM
(Linux 6.18), shared with other work unless a row's run says otherwise:
compare rows of one run, not across runs.

Columns:
- rate: req/s (msg/s for ws: echoes back; Gbit/s for l4; KiB of RSS per
  connection for idle)
- p50, p99: latency in ms (wrk --latency for h1 max; h2load's per-request
  log for h2, h1 half and grpc; h3load's for h3 and modea; modea `single`:
  one request at a time on an idle connection, p50 = median, p99 = p90)
- cpu: utime+stime of every process of the proxy per request (us/req), per
  message (us/msg) or per GiB moved (ms/GiB)
- rss: VmRSS of the proxy's processes in MiB, in the middle of the run
- up: connections the proxy opened to the origin, warm-up included (origin
  nginx stub_status); ws, grpc: connections open to the origin mid-run (ss)
- reuse: 100 * (1 - up / requests), warm-up included
- ratio: gateway rows only: gateway / best peer (cpu; p99 for `half`; KiB per
  connection for idle); l4 and modea: also the gateway's rate as % of direct
- half: p99 at one offered rate for every proxy, half of the lowest max
  req/s of the proxies in that run (h2load --rps, --h1 for HTTP/1.1;
  h3load --rps for h3)

| date | commit | s | path | case | proxy | rate | unit | p50 | p99 | cpu | cpu unit | rss MiB | up | reuse % | ratio | errors |
|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|
"""


def num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def metric(r):
    """The figure a case compares, lower is better."""
    if r["case"].startswith("half"):
        return num(r["p99"]), "p99"
    if r["unit"] == "KiB/conn":
        return num(r["rate"]), "KiB/conn"
    return num(r["cpu"]), "cpu"


def main():
    rows_path, stamp, commit, results = sys.argv[1:5]
    seconds = os.environ.get("SECONDS_PER_CASE", "10")
    rows = []
    with open(rows_path) as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) == len(COLS):
                rows.append(dict(zip(COLS, parts)))
    groups = {}
    for r in rows:
        groups.setdefault((r["path"], r["case"]), []).append(r)

    print("ratios (gateway / best peer; lower is better except rate):")
    ratios = {}
    for (path, case), rs in groups.items():
        gw = next((r for r in rs if r["proxy"] == "gateway"), None)
        if gw is None:
            continue
        gval, what = metric(gw)
        peers = [(metric(r)[0], r) for r in rs if r["proxy"] not in ("gateway", "direct")]
        peers = [(v, r) for v, r in peers if v is not None]
        notes = []
        if gval is not None and peers:
            best_v, best = min(peers, key=lambda p: p[0])
            if best_v > 0:
                ratio = gval / best_v
                ratios[(path, case)] = ratio
                gw["ratio"] = f"{ratio:.2f}x {best['proxy']}"
                notes.append(f"{what} {ratio:.2f}x {best['proxy']} ({gval:g} vs {best_v:g})")
                grate, brate = num(gw["rate"]), num(best["rate"])
                if what == "cpu" and grate and brate:
                    notes.append(f"rate {grate / brate:.2f}x")
        direct = next((r for r in rs if r["proxy"] == "direct"), None)
        # l4 and modea compare with the direct path; elsewhere "direct" is
        # the origin alone, a ceiling for the load tool, not a goal.
        if direct and path in ("l4", "modea") and num(gw["rate"]) is not None and num(direct["rate"]):
            pct = 100 * num(gw["rate"]) / num(direct["rate"])
            gw["of_direct"] = pct
            gw["ratio"] = (gw.get("ratio", "") + f" {pct:.0f}% of direct").strip()
            notes.append(f"rate {pct:.0f} % of direct")
        if notes:
            print(f"  {path:5} {case:8} " + ", ".join(notes))

    print("goals (issue 13):")

    def goal(name, value, ok):
        if value is None:
            print(f"  {name}: n/a")
        else:
            print(f"  {name}: {value} ({'met' if ok else 'not met'})")

    for path in ("h1", "h2", "h3"):
        if (path, "max") in groups and path != "h3":
            r = ratios.get((path, "max"))
            goal(f"{path} cpu/req <= 0.8x best peer", r and f"{r:.2f}x", r is not None and r <= 0.8)
        if (path, "half") in groups:
            r = ratios.get((path, "half"))
            goal(f"{path} p99 at half load <= best peer", r and f"{r:.2f}x", r is not None and r <= 1.0)
    if ("h3", "max") in groups:
        h3 = next((num(r["cpu"]) for r in groups[("h3", "max")] if r["proxy"] == "gateway"), None)
        h2 = next((num(r["cpu"]) for r in groups.get(("h3", "h2ref"), []) if r["proxy"] == "gateway"), None)
        r = h3 / h2 if h3 and h2 else None
        goal("h3 cpu/req <= 1.3x own h2 (same shape)", r and f"{r:.2f}x", r is not None and r <= 1.3)
    for case in ("up", "reverse"):
        if ("l4", case) in groups:
            gw = next((r for r in groups[("l4", case)] if r["proxy"] == "gateway"), {})
            pct = gw.get("of_direct")
            goal(f"l4 {case} >= 85 % of direct", pct and f"{pct:.0f} %", pct is not None and pct >= 85)
            r = ratios.get(("l4", case))
            goal(f"l4 {case} cpu/GiB <= 0.5x haproxy", r and f"{r:.2f}x", r is not None and r <= 0.5)
    if ("modea", "/") in groups:
        gw = next((r for r in groups[("modea", "/")] if r["proxy"] == "gateway"), {})
        pct = gw.get("of_direct")
        goal("modea >= 80 % of direct req/s", pct and f"{pct:.0f} %", pct is not None and pct >= 80)
    if ("modea", "single") in groups:
        g = {r["proxy"]: num(r["p50"]) for r in groups[("modea", "single")]}
        add = (g["gateway"] - g["direct"]) * 1000 if g.get("gateway") is not None and g.get("direct") is not None else None
        goal("modea single-request p50 added < 50 us", add is not None and f"{add:.0f} us", add is not None and add < 50)
    for case in ("h1", "h1-bare", "h2c"):
        if ("idle", case) in groups:
            v = next((num(r["rate"]) for r in groups[("idle", case)] if r["proxy"] == "gateway"), None)
            goal(f"idle {case} <= 8 KiB/conn", v is not None and f"{v:g} KiB", v is not None and v <= 8)
    reuse = [(r["path"], r["case"], num(r["reuse"])) for r in rows if r["proxy"] == "gateway" and num(r["reuse"]) is not None]
    if reuse:
        worst = min(reuse, key=lambda x: x[2])
        goal("upstream reuse >= 99.9 % (worst gateway case)", f"{worst[2]:g} % ({worst[0]} {worst[1]})", worst[2] >= 99.9)

    new = not os.path.exists(results)
    with open(results, "a") as f:
        if new:
            f.write(HEADER)
        for r in rows:
            cells = [stamp, commit, seconds] + [r[c] for c in COLS[:12]] + [r.get("ratio", ""), r["errors"]]
            f.write("| " + " | ".join(c.replace("|", "/") for c in cells) + " |\n")
    print(f"{len(rows)} rows appended to {results}")


if __name__ == "__main__":
    main()
