#!/usr/bin/env python3
"""Lines up the latency runs' slow requests with refedge's background work.

Reads what `TIMELINE=1 loadtest/run` leaves in target/stalls/: each run's
slow requests (`<server>-<run>.slow`: the wall-clock µs each was due and its
latency), the run's start and end (`.window`), and refedge's timeline log
(`refedge-timeline.jsonl`: each click batch, rollup pass and visitor sweep
as it ended, with how long it ran). Slow requests closer than GAP_MS to
each other make one stall. It prints, per server, the stalls of 5 ms or
more; for refedge, each such stall with the long background steps (over
LONG_MS) running during it; and for each kind of background work, the
share of the runs' time it was running beside the share of stalls that
overlapped it — a cause shows as a much larger share of stalls than of
time.

    loadtest/stalls.py [target/stalls] [GAP_MS] [LONG_MS]
"""
import glob
import json
import os
import sys
from datetime import datetime

root = sys.argv[1] if len(sys.argv) > 1 else "target/stalls"
gap_us = int(float(sys.argv[2] if len(sys.argv) > 2 else 5) * 1000)
long_us = int(float(sys.argv[3] if len(sys.argv) > 3 else 5) * 1000)
STALL_US = 5000


def stalls_of(path):
    reqs = sorted(tuple(map(int, l.split())) for l in open(path) if l.strip())
    out = []
    for at, us in reqs:
        if out and at - out[-1]["last_due"] <= gap_us:
            s = out[-1]
            s["last_due"] = at
            s["end"] = max(s["end"], at + us)
            s["worst_us"] = max(s["worst_us"], us)
            s["requests"] += 1
        else:
            out.append({"start": at, "last_due": at, "end": at + us, "worst_us": us, "requests": 1})
    return out


def clock(us):
    return datetime.fromtimestamp(us / 1e6).strftime("%H:%M:%S.%f")[:-3]


timeline = []
tl_path = os.path.join(root, "refedge-timeline.jsonl")
if os.path.exists(tl_path):
    for line in open(tl_path):
        try:
            e = json.loads(line)
        except ValueError:
            continue
        f = e.get("fields", {})
        end = datetime.fromisoformat(e["timestamp"].replace("Z", "+00:00")).timestamp() * 1e6
        timeline.append({"what": f.get("what"), "items": f.get("items", 0),
                         "start": end - f.get("us", 0), "end": end, "us": f.get("us", 0)})
# Long click batches apart: the writer runs most of the time, so "during
# a batch" says little; "during a batch that took over LONG_MS" does.
for e in list(timeline):
    if e["what"] == "click_batch" and e["us"] >= long_us:
        timeline.append(dict(e, what=f"click_batch over {long_us // 1000} ms"))
kinds = sorted({e["what"] for e in timeline})

by_server = {}
for path in sorted(glob.glob(os.path.join(root, "*.slow"))):
    server, run = os.path.basename(path)[:-5].split("-")
    window = os.path.join(root, f"{server}-{run}.window")
    w = tuple(map(int, open(window).read().split())) if os.path.exists(window) else None
    big = [s for s in stalls_of(path) if s["worst_us"] >= STALL_US]
    by_server.setdefault(server, []).append((int(run), w, big))

for server, runs in sorted(by_server.items()):
    runs.sort()
    counts = [len(b) for _, _, b in runs]
    worst = sorted((s["worst_us"] for _, _, b in runs for s in b), reverse=True)[:5]
    print(f"{server}: stalls of 5 ms or more by run {counts}; the worst "
          f"{', '.join(f'{w / 1000:.1f}' for w in worst) or '-'} ms")

refedge = by_server.get("refedge", [])
for run, _, big in refedge:
    for s in sorted(big, key=lambda s: -s["worst_us"])[:5]:
        during = [e for e in timeline if e["start"] <= s["end"] and e["end"] >= s["start"]
                  and e["what"] != "click_batch"]
        what = ", ".join(f"{e['what']} {e['us'] / 1000:.1f} ms" for e in during) or "no long step"
        print(f"  run {run}: {clock(s['start'])} worst {s['worst_us'] / 1000:.1f} ms, "
              f"{s['requests']} slow requests; during: {what}")

# Share of time each kind of work ran vs share of stalls overlapping it.
total = sum(w[1] - w[0] for _, w, _ in refedge if w)
stalls = [s for _, _, b in refedge for s in b]
for kind in kinds:
    steps = [e for e in timeline if e["what"] == kind]
    busy = 0
    for _, w, _ in refedge:
        if not w:
            continue
        for e in steps:
            busy += max(0, min(e["end"], w[1]) - max(e["start"], w[0]))
    hit = sum(1 for s in stalls if any(e["start"] <= s["end"] and e["end"] >= s["start"] for e in steps))
    us = sorted(e["us"] for e in steps)
    print(f"{kind}: {len(steps)} steps (median {us[len(us) // 2] / 1000:.2f} ms, max {us[-1] / 1000:.1f} ms); "
          f"running {100 * busy / total if total else 0:.0f}% of the runs' time, "
          f"during {hit} of {len(stalls)} stalls ({100 * hit / len(stalls) if stalls else 0:.0f}%)")
