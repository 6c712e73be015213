"""How fast `accept()` makes items durable: one item per call, as a webhook view does.

    .venv/bin/python -m bench.accept [--items N] [--threads T] [--store-url URL --queue-url URL]

Defaults to the embedded SQLite store and queue in a temporary folder. Prints items/s and
the p50/p99 latency of one accept (insert + commit with fsync; the queue write follows on a
background thread), then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from integrations.config import parse_settings
from integrations.events import MessageKind, SocialMessage, SocialUser
from integrations.runtime import Runtime


def make_message(n: int) -> SocialMessage:
    return SocialMessage(
        channel="x", account="1000", message_id=str(1_860_000_000_000_000_000 + n),
        kind=MessageKind.MENTION, author=SocialUser("x", str(n % 500), f"user{n % 500}"),
        text=f"@acme ticket #{48000 + n} still broken", created_at=datetime.now(UTC),
        raw={"id_str": str(n)},
    )


def run(store_url: str, queue_url: str, items: int, threads: int) -> dict[str, object]:
    settings = parse_settings(f'[store]\nurl = "{store_url}"\n[queue]\nurl = "{queue_url}"\n'
                              f'name = "bench-{time.time_ns()}"\n', environ={})
    runtime = Runtime(settings)
    runtime.upgrade_schema()
    latencies: list[float] = []
    lock = threading.Lock()

    def worker(start: int) -> None:
        mine = []
        for n in range(start, items, threads):
            t0 = time.perf_counter()
            runtime.pipeline.accept([make_message(n)])
            mine.append(time.perf_counter() - t0)
        with lock:
            latencies.extend(mine)

    t0 = time.perf_counter()
    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    elapsed = time.perf_counter() - t0
    stored = sum(runtime.store.count_items().values())
    runtime.huey.flush()
    runtime.close()
    cuts = statistics.quantiles(latencies, n=100)
    return {
        "bench": "accept", "store": store_url.split(":", 1)[0], "queue": queue_url.split(":")[0],
        "items": items, "threads": threads, "items_per_s": round(items / elapsed, 1),
        "p50_ms": round(cuts[49] * 1000, 2), "p99_ms": round(cuts[98] * 1000, 2),
        "stored": stored,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--store-url")
    parser.add_argument("--queue-url")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = args.store_url or f"sqlite:///{Path(tmp)}/store.db"
        queue = args.queue_url or f"sqlite:///{Path(tmp)}/queue.db"
        figures = run(store, queue, args.items, args.threads)
    print(f"accept(): {figures['items_per_s']} items/s, p50 {figures['p50_ms']} ms, "
          f"p99 {figures['p99_ms']} ms ({figures['stored']}/{figures['items']} stored)")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
