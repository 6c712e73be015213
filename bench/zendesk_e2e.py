"""Zendesk end to end: API calls per message, and time from X's POST to the comment existing.

    .venv/bin/python -m bench.zendesk_e2e [--latency 0.1] [--messages 30] [--workers 4]

Runs the X emulator, the Zendesk emulator (each API call delayed by `--latency` seconds) and
deskbridge on loopback, with real worker threads. Counts the Zendesk calls the emulator
answered for three kinds of message (targets: a referenced tweet from a known requester ≤ 2,
a thread reply ≤ 1, a new ticket with a new user ≤ 4), then times `--messages` tweets, each
citing its sender's own ticket, from the webhook POST until the comment is on the ticket.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path

from tests.e2e_world import World, calls, requester, running_world


def calls_per_kind(world: World) -> dict[str, int]:
    ticket = world.zd.add_ticket(requester_id=requester(world, "9001", "bekend"), body="Storing")
    before = calls(world.zd)
    world.tweet(f"@brand #{ticket['id']} nog steeds", author="9001", handle="bekend")
    world.settle()
    referenced = calls(world.zd) - before
    before = calls(world.zd)
    post = world.tweet("@brand mijn pakket is zoek", author="9002", handle="nieuw")
    world.settle()
    new = calls(world.zd) - before
    before = calls(world.zd)
    world.tweet("@brand en nu?", author="9002", handle="nieuw", reply_to=post)
    world.settle()
    return {"referenced_known_requester": referenced, "new_ticket_new_user": new,
            "thread_reply": calls(world.zd) - before}


def end_to_end_seconds(world: World, messages: int, workers: int) -> list[float]:
    consumer = world.runtime.consumer(workers=workers, embedded=True)
    consumer.start()
    stop = threading.Event()
    world.runtime.start_intake(stop)  # as `deskbridge run` does: the journal's mover
    took = []
    try:
        for n in range(messages):
            author = str(20_000 + n)
            ticket = world.zd.add_ticket(requester_id=requester(world, author, f"k{n}"),
                                         body="Storing")
            start = time.perf_counter()
            world.tweet(f"@brand ticket {ticket['id']}: bericht {n}", author=author,
                        handle=f"k{n}")
            while len(world.zd.comments(ticket["id"])) < 2:
                if time.perf_counter() - start > 30:
                    raise SystemExit(f"message {n} did not reach its ticket in 30 s")
                time.sleep(0.005)
            took.append(time.perf_counter() - start)
    finally:
        stop.set()
        consumer.stop(graceful=True)
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--messages", type=int, default=30)
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, running_world(Path(tmp), args.latency) as world:
        per_kind = calls_per_kind(world)
        took = end_to_end_seconds(world, args.messages, args.workers)
    cuts = statistics.quantiles(took, n=20)
    figures = {"bench": "zendesk_e2e", "latency_s": args.latency, "api_calls": per_kind,
               "messages": len(took), "median_s": round(statistics.median(took), 3),
               "p95_s": round(cuts[18], 3)}
    print(f"Zendesk calls: {per_kind}; POST → comment with {args.latency * 1000:.0f} ms per "
          f"call: median {figures['median_s']} s, p95 {figures['p95_s']} s")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
