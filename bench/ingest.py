"""Ingest: signed X webhook POSTs against `deskbridge serve` and a bare Flask app.

    .venv/bin/python -m bench.ingest [--seconds 3] [--rounds 3] [--clients 16] [--rate 200]
                                     [--mover]

Both run under gunicorn with identical settings (2 gthread workers); deskbridge on its embedded
SQLite defaults. Measured in one run, interleaved round by round:
- throughput of each with `--clients` concurrent senders (closed loop), and their ratio;
- p50/p99/p99.9 and worst latency at a fixed `--rate` requests/s (open loop: from each
  request's scheduled send time, so a stall is not hidden by the sender waiting for it);
- meanwhile, the disk's own stalls: a separate process overwrites 4 KiB of a synced file
  and `fdatasync`s it every 20 ms (`disk_fsync_*`). A 200 waits for an `fdatasync`, so when
  this probe's worst is as long as deskbridge's, the tail was the disk, not deskbridge;
- peak RSS of each web worker (VmHWM);
- the web workers' CPU time (user + system) per answered request, for each app;
- the share of events deskbridge acknowledged with 200 that are in its store afterwards.
Every request carries a distinct recorded mention (its ids rewritten), so none is a duplicate.

`serve` is the web tier alone: it makes each delivery durable in its intake journal, and
`deskbridge worker` moves the journals into the store (integrations/intake.py). After the
load, the bench does that move as the worker does, and reports its rate (`moved_per_s`), so
the cost the web tier no longer carries is measured too. With `--mover`, the worker's mover
runs beside `serve` during the load, on the same cores, as on a one-machine deployment.
"""

from __future__ import annotations

import argparse
import copy
import http.client
import json
import multiprocessing
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Self

from integrations.config import load_settings
from integrations.runtime import Runtime
from integrations.store import Store
from integrations.twitter.webhooks import sign

ROOT = Path(__file__).resolve().parents[1]
PAYLOAD = ROOT / "tests/payloads/x/account_activity/tweet_create_mention.json"
SECRET = "bench-consumer-secret"
# What `deskbridge serve` runs with (integrations/serving.py), for the bare app too.
GUNICORN = ["--workers", "2", "--worker-class", "gthread", "--timeout", "30",
            "--graceful-timeout", "20"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(folder: Path, account: str) -> Path:
    path = folder / "deskbridge.toml"
    path.write_text(f"""[store]\nurl = "sqlite:///{folder}/deskbridge.db"\n[queue]
url = "sqlite:///{folder}/queue.db"\n[channels.brand]\ntype = "x"
account_id = "{account}"\nhandle = "brand"\nconsumer_key = "ck"\nconsumer_secret = "{SECRET}"
""")
    return path


def bodies(count: int, offset: int) -> list[tuple[str, bytes, str]]:
    """`count` distinct signed deliveries: (tweet id, body, signature)."""
    template = json.loads(PAYLOAD.read_bytes())
    out = []
    for n in range(offset, offset + count):
        payload = copy.deepcopy(template)
        tweet = payload["tweet_create_events"][0]
        tweet_id = str(1_900_000_000_000_000_000 + n)
        tweet["id"], tweet["id_str"] = int(tweet_id), tweet_id
        tweet["user"]["id_str"] = str(10_000 + n % 997)
        body = json.dumps(payload).encode()
        out.append((tweet_id, body, sign(SECRET, body)))
    return out


def post(port: int, body: bytes, signature: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", "/webhooks/x", body=body, headers={
            "Content-Type": "application/json", "X-Twitter-Webhooks-Signature": signature})
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


# ---------------------------------------------------------------- closed-loop throughput


def _closed_loop_worker(port: int, work: list[tuple[str, bytes, str]], deadline: float,
                        results: Any) -> None:
    acked, done = [], 0
    lock = threading.Lock()
    items = iter(work)

    def sender() -> None:
        nonlocal done
        while time.monotonic() < deadline:
            with lock:
                item = next(items, None)
            if item is None:
                return
            if post(port, item[1], item[2]) == 200:
                with lock:
                    acked.append(item[0])
                    done += 1

    threads = [threading.Thread(target=sender) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    results.put((done, acked))


def throughput(port: int, work: list[tuple[str, bytes, str]], seconds: float,
               clients: int) -> tuple[float, list[str]]:
    """Requests per second answered 200 by `clients` concurrent senders for `seconds`."""
    processes = max(1, clients // 8)
    share = len(work) // processes
    results: Any = multiprocessing.Queue()
    start = time.monotonic()
    deadline = start + seconds
    procs = [multiprocessing.Process(target=_closed_loop_worker, args=(
        port, work[i * share:(i + 1) * share], deadline, results)) for i in range(processes)]
    for p in procs:
        p.start()
    outcomes = [results.get() for _ in procs]
    for p in procs:
        p.join()
    elapsed = time.monotonic() - start
    return sum(o[0] for o in outcomes) / elapsed, [i for o in outcomes for i in o[1]]


# ---------------------------------------------------------------- open-loop latency


def latency(port: int, work: list[tuple[str, bytes, str]], rate: float) -> tuple[list[float], list[str]]:
    """Send `work` at `rate`/s on schedule; each latency runs from its scheduled time."""
    start = time.monotonic() + 0.2
    latencies: list[float] = []
    acked: list[str] = []
    lock = threading.Lock()
    counter = iter(range(len(work)))

    def sender() -> None:
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            scheduled = start + i / rate
            time.sleep(max(0.0, scheduled - time.monotonic()))
            status = post(port, work[i][1], work[i][2])
            took = time.monotonic() - scheduled
            with lock:
                latencies.append(took)
                if status == 200:
                    acked.append(work[i][0])

    threads = [threading.Thread(target=sender) for _ in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, acked


# ---------------------------------------------------------------- processes


def start(command: list[str], port: int, log: Path) -> subprocess.Popen[bytes]:
    """Start a server (its logs to `log`, as a service's would go to a file) and wait for it."""
    with log.open("ab") as out:
        proc = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=out, start_new_session=True,
                                env={**os.environ, "PYTHONPATH": str(ROOT)})
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc
        except OSError:
            if proc.poll() is not None:
                raise SystemExit(f"{command[:4]} exited: {log.read_text()[-2000:]}") from None
            time.sleep(0.1)
    raise SystemExit(f"{command[:4]} did not start listening on {port}")


def worker_pids(master: int) -> list[int]:
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == master:
            pids.append(int(stat.parent.name))
    return pids


def cpu_seconds(master: int) -> float:
    """User + system CPU time used so far by a gunicorn master's workers."""
    total = 0
    for pid in worker_pids(master):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (after the name)
    return total / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def stop(proc: subprocess.Popen[bytes]) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def ms(values: list[float], q: int) -> float:
    return round(statistics.quantiles(values, n=100)[q - 1] * 1000, 2)


def per_mille(values: list[float], q: int) -> float:
    return round(statistics.quantiles(values, n=1000)[q - 1] * 1000, 2)


class DiskProbe:
    """Times an in-place 4 KiB write + `fdatasync` every 20 ms in a process of its own.

    The file is written whole and synced first, so each probe is what a journal append costs
    the disk, with none of deskbridge's code around it.
    """

    def __init__(self, path: Path, *, enabled: bool) -> None:
        self.path = path
        self.enabled = enabled
        self._stop = multiprocessing.Event()
        self._results: Any = multiprocessing.Queue()
        self._timings: list[float] = []

    def __enter__(self) -> Self:
        if self.enabled:
            self._proc = multiprocessing.Process(target=_probe_disk, args=(
                self.path, self._stop, self._results))
            self._proc.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self._stop.set()
            self._timings = self._results.get(timeout=30)
            self._proc.join()

    @property
    def timings(self) -> list[float]:
        """Each probe's seconds, once the probe has stopped."""
        return self._timings

    def figures(self) -> dict[str, float | None]:
        timings = self._timings
        return {"disk_fsync_p99_ms": ms(timings, 99) if len(timings) > 1 else None,
                "disk_fsync_worst_ms": round(max(timings) * 1000, 2) if timings else None}


def _probe_disk(path: Path, stop: Any, results: Any) -> None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.pwrite(fd, bytes(1 << 20), 0)
    os.fsync(fd)
    timings = []
    n = 0
    while not stop.wait(0.02):
        started = time.perf_counter()
        os.pwrite(fd, os.urandom(4096), (n % 256) * 4096)
        os.fdatasync(fd)
        timings.append(time.perf_counter() - started)
        n += 1
    os.close(fd)
    results.put(timings)


def main() -> None:
    parser = argparse.ArgumentParser(description="deskbridge ingest benchmark")
    parser.add_argument("--seconds", type=float, default=3.0, help="length of a round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--latency-requests", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=4, help="per gunicorn worker, both apps")
    parser.add_argument("--mover", action="store_true",
                        help="run the worker's journal mover beside serve during the load")
    parser.add_argument("--no-disk-probe", dest="disk_probe", action="store_false",
                        help="do not time the disk's own fdatasync during the latency run")
    args = parser.parse_args()
    account = json.loads(PAYLOAD.read_bytes())["for_user_id"]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        config = write_config(folder, account)
        subprocess.run([sys.executable, "-m", "integrations", "db", "upgrade", "--config",
                        str(config)], check=True, capture_output=True, cwd=ROOT)
        db_port, bare_port = free_port(), free_port()
        deskbridge = start([sys.executable, "-m", "integrations", "serve", "--config", str(config),
                            "--port", str(db_port), "--workers", "2", "--threads",
                            str(args.threads)], db_port,
                           folder / "deskbridge.log")
        bare = start([sys.executable, "-m", "gunicorn", *GUNICORN, "--threads", str(args.threads),
                      "--bind",
                      f"127.0.0.1:{bare_port}", "bench.bare_app:app"], bare_port,
                     folder / "bare.log")
        mover = subprocess.Popen([sys.executable, "-c", MOVER, str(config)], cwd=ROOT,
                                 start_new_session=True) if args.mover else None
        try:
            figures = measure(args, db_port, bare_port, deskbridge.pid, bare.pid, folder)
        finally:
            stop(deskbridge)
            stop(bare)
            if mover is not None:
                stop(mover)
        figures["mover_alongside"] = args.mover
        figures.update(move_journals(config))
        store = Store(load_settings(config).store.url)
        figures["found_share"] = found_share(store, figures.pop("acked_ids"))
        store.dispose()
    print(f"deskbridge {figures['deskbridge_rps']} req/s vs bare {figures['bare_rps']} req/s "
          f"(ratio {figures['ratio']}); at {args.rate:.0f} req/s p50 {figures['p50_ms']} ms, "
          f"p99 {figures['p99_ms']} ms, p99.9 {figures['p99_9_ms']} ms, worst "
          f"{figures['worst_ms']} ms (bare p99 {figures['bare_p99_ms']}, worst "
          f"{figures['bare_worst_ms']}; disk fdatasync worst {figures['disk_fsync_worst_ms']} "
          f"ms); peak RSS/worker {figures['peak_rss_mb']} MB; "
          f"acknowledged events stored: {figures['found_share']:.2%} (moved from the journals "
          f"at {figures['moved_per_s']} items/s)")
    print(json.dumps(figures))


def measure(args: argparse.Namespace, db_port: int, bare_port: int, db_pid: int,
            bare_pid: int, folder: Path) -> dict[str, Any]:
    per_round = int(args.seconds * 4000)
    offset = 0
    acked: list[str] = []
    db_rps, bare_rps = [], []
    cpu = {db_pid: [0.0, 0], bare_pid: [0.0, 0]}  # per server: CPU seconds, requests answered

    def round_on(port: int, pid: int, work: list[tuple[str, bytes, str]]
                 ) -> tuple[float, list[str]]:
        before = cpu_seconds(pid)
        rps, ok = throughput(port, work, args.seconds, args.clients)
        cpu[pid][0] += cpu_seconds(pid) - before
        cpu[pid][1] += len(ok)
        return rps, ok

    for _ in range(args.rounds):  # interleaved: deskbridge, bare, deskbridge, bare, ...
        work = bodies(per_round, offset)
        offset += per_round
        rps, ok = round_on(db_port, db_pid, work)
        db_rps.append(rps)
        acked += ok
        bare_rps.append(round_on(bare_port, bare_pid, work)[0])
    work = bodies(args.latency_requests, offset)
    with DiskProbe(folder / "disk-probe", enabled=args.disk_probe) as disk:
        db_lat, ok = latency(db_port, work, args.rate)
    acked += ok
    bare_lat, _ = latency(bare_port, work, args.rate)
    deskbridge_rps, bare = statistics.mean(db_rps), statistics.mean(bare_rps)
    return {
        "bench": "ingest", "deskbridge_rps": round(deskbridge_rps, 1), "bare_rps": round(bare, 1),
        "ratio": round(deskbridge_rps / bare, 3), "rate": args.rate,
        "p50_ms": ms(db_lat, 50), "p99_ms": ms(db_lat, 99), "p99_9_ms": per_mille(db_lat, 999),
        "worst_ms": round(max(db_lat) * 1000, 2),
        "bare_p50_ms": ms(bare_lat, 50), "bare_p99_ms": ms(bare_lat, 99),
        "bare_p99_9_ms": per_mille(bare_lat, 999), "bare_worst_ms": round(max(bare_lat) * 1000, 2),
        **disk.figures(),
        # Where the gap comes from: web-worker CPU per answered request, each app.
        "cpu_ms_per_request": round(cpu[db_pid][0] / max(1, cpu[db_pid][1]) * 1000, 3),
        "bare_cpu_ms_per_request": round(cpu[bare_pid][0] / max(1, cpu[bare_pid][1]) * 1000, 3),
        "peak_rss_mb": round(max(peak_rss_mb(p) for p in worker_pids(db_pid)), 1),
        "bare_peak_rss_mb": round(max(peak_rss_mb(p) for p in worker_pids(bare_pid)), 1),
        "acked": len(acked), "acked_ids": acked,
    }


# What `deskbridge worker` runs to move the journals, without its queue consumer (which would
# process the items: not part of the ingest path). argv: the config file.
MOVER = """
import signal, sys, threading
from integrations.config import load_settings
from integrations.runtime import Runtime
runtime = Runtime(load_settings(sys.argv[1]))
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
runtime.start_intake(stop)
stop.wait()
runtime.close()
"""


def move_journals(config: Path) -> dict[str, Any]:
    """Move what the web tier journaled into the store, as `deskbridge worker` does."""
    runtime = Runtime(load_settings(config))
    try:
        started = time.perf_counter()
        moved = runtime.intake.recover()
        took = time.perf_counter() - started
    finally:
        runtime.close()
    return {"moved": moved, "moved_per_s": round(moved / took, 1) if took else 0.0}


def found_share(store: Store, acked: list[str]) -> float:
    found = {i.provider_id for i in store.list_items(limit=len(acked) + 10)}
    return sum(1 for a in acked if a in found) / len(acked) if acked else 0.0


if __name__ == "__main__":
    main()
