"""What the serving benchmarks share: the real server on a workspace, load at a fixed rate or
as fast as it answers, its resident memory, and the results file `results/serving.json`.

The load is open-loop: request i is due at `start + i / rate` whatever happened to earlier ones,
and its latency counts from that moment, so a stalled server shows as latency instead of as a
quietly lower rate (coordinated omission).
"""

from __future__ import annotations

import asyncio
import gc
import json
import socket
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from features.settings import Settings  # noqa: E402
from pipelines import cli, steps  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "serving.json"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def served(settings: Settings, env: dict[str, str] | None = None) -> Iterator[Server]:
    """`bentoml serve` on the workspace of `settings` (as `omnishelf serve` starts it), ready."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = cli.start_server(settings, port, env)
    try:
        cli.wait_ready(process, url, settings.data_dir / "server.log")
        yield Server(url, process)
    finally:
        cli.stop_server(process)


@dataclass
class Server:
    url: str
    process: object  # subprocess.Popen of `bentoml serve`

    def rss_bytes(self) -> int:
        """Resident memory of the server and all its workers."""
        root = psutil.Process(self.process.pid)
        total = 0
        for process in [root, *root.children(recursive=True)]:
            with suppress(psutil.NoSuchProcess):  # a worker that exited meanwhile
                total += process.memory_info().rss
        return total


@dataclass
class Load:
    """What one load run saw: latencies in ms and the status of every request (0: no answer)."""

    seconds: float
    latencies_ms: np.ndarray
    statuses: np.ndarray
    bodies: list = field(default_factory=list)  # the JSON answers, when asked to keep them

    @property
    def rps(self) -> float:
        return len(self.statuses) / self.seconds

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q))

    def count(self, predicate: Callable[[np.ndarray], np.ndarray]) -> int:
        return int(predicate(self.statuses).sum())

    def summary(self) -> dict:
        return {
            "requests": len(self.statuses),
            "rps": round(self.rps, 1),
            "p50_ms": round(self.percentile(50), 2),
            "p99_ms": round(self.percentile(99), 2),
            "errors": self.count(lambda s: (s == 0) | (s >= 500)),
        }


async def _send(session, method, url, body, keep) -> tuple[int, object]:
    try:
        async with session.request(method, url, json=body) as response:
            content = await response.read()
    except (aiohttp.ClientError, TimeoutError):
        return 0, None
    # An answer that is not JSON (a proxy's 502 page, say) still counts with its status.
    try:
        return response.status, json.loads(content) if keep else None
    except ValueError:
        return response.status, None


def settle_heap() -> None:
    """Keep this process's garbage collector off the clock: with the whole stack imported, a
    full collection walks a few hundred thousand objects (100+ ms), which would be counted as
    the server's latency."""
    gc.collect()
    gc.freeze()


def open_loop(
    url: str,
    bodies: list,
    rate: float,
    seconds: float,
    method: str = "POST",
    headers: dict | None = None,
    keep: bool = False,
    on_tick: Callable[[float], None] | None = None,
) -> Load:
    """`rate` requests a second for `seconds`, cycling through `bodies`; `on_tick(elapsed)` is
    called about once a second (to kill a dependency mid-run, say)."""

    settle_heap()

    async def run() -> Load:
        n = int(rate * seconds)
        latencies, statuses = np.zeros(n), np.zeros(n, int)
        answers = [None] * n if keep else []
        timeout = aiohttp.ClientTimeout(total=10)
        connector = aiohttp.TCPConnector(limit=256)
        async with aiohttp.ClientSession(
            timeout=timeout, connector=connector, headers=headers
        ) as session:
            start = time.perf_counter()

            async def one(i: int, due: float) -> None:
                statuses[i], answer = await _send(
                    session, method, url, bodies[i % len(bodies)], keep
                )
                latencies[i] = (time.perf_counter() - due) * 1e3
                if keep:
                    answers[i] = answer

            async def ticks() -> None:
                while (elapsed := time.perf_counter() - start) < seconds:
                    on_tick(elapsed)
                    await asyncio.sleep(1.0)

            # Each request is started when it is due: creating them all up front kept the
            # event loop busy for the first half second, which showed as server latency.
            jobs = [asyncio.create_task(ticks())] if on_tick else []
            for i in range(n):
                due = start + i / rate
                await asyncio.sleep(max(0.0, due - time.perf_counter()))
                jobs.append(asyncio.create_task(one(i, due)))
            await asyncio.gather(*jobs)
            return Load(time.perf_counter() - start, latencies, statuses, answers)

    return asyncio.run(run())


def closed_loop(url: str, bodies: list, concurrency: int, seconds: float) -> Load:
    """`concurrency` callers each sending the next request as soon as the last is answered:
    the throughput the server sustains."""
    settle_heap()

    async def run() -> Load:
        latencies: list[float] = []
        statuses: list[int] = []
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            start = time.perf_counter()

            async def caller(offset: int) -> None:
                i = offset
                while time.perf_counter() - start < seconds:
                    sent = time.perf_counter()
                    status, _ = await _send(session, "POST", url, bodies[i % len(bodies)], False)
                    latencies.append((time.perf_counter() - sent) * 1e3)
                    statuses.append(status)
                    i += concurrency

            await asyncio.gather(*(caller(c) for c in range(concurrency)))
            return Load(time.perf_counter() - start, np.array(latencies), np.array(statuses))

    return asyncio.run(run())


def record(figures: dict) -> None:
    """Merge `figures` into results/serving.json (each benchmark owns some of its keys)."""
    current = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    steps.write_results(RESULTS, current | figures)
    print(json.dumps(figures, indent=2))
