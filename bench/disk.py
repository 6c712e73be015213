"""The disk alone: what one durable 4 KiB append costs here, with nothing of deskbridge running.

    .venv/bin/python -m bench.disk [--seconds 60]

The same probe `bench.ingest` runs beside its latency run (an in-place 4 KiB write and an
`fdatasync` every 20 ms, in a process of its own). A 200 from the X webhook means the
delivery is `fdatasync`ed, so no request can be faster than this disk's flush: when this
probe alone shows flushes over 50 ms, no p99 at 200 requests/s can stay under 50 ms either.
Prints the p50, p99, worst and how many flushes took over 20 and 50 ms, then a JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from bench.ingest import DiskProbe


def main() -> None:
    parser = argparse.ArgumentParser(description="fdatasync latency of this machine's disk")
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder, \
            DiskProbe(Path(folder) / "disk-probe", enabled=True) as probe:
        time.sleep(args.seconds)
    timings = [t * 1000 for t in probe.timings]
    cuts = statistics.quantiles(timings, n=100)
    figures = {"bench": "disk", "flushes": len(timings), "p50_ms": round(cuts[49], 2),
               "p99_ms": round(cuts[98], 2), "worst_ms": round(max(timings), 2),
               "over_20_ms": sum(t > 20 for t in timings),
               "over_50_ms": sum(t > 50 for t in timings)}
    print(f"{figures['flushes']} flushes: p50 {figures['p50_ms']} ms, p99 {figures['p99_ms']} "
          f"ms, worst {figures['worst_ms']} ms; {figures['over_50_ms']} over 50 ms")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
