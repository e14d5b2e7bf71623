"""Robustness of the real server (issue 6): fuzzing, a soak run, and Redis killed under load.

    .venv/bin/python benchmarks/serving_faults.py [fuzz|soak|redis|all]   # merges its keys into
                                                                        # results/serving.json
    .venv/bin/python benchmarks/serving_faults.py soak --rate 20 --seconds 60   # a trial run

`bentoml serve` on loopback (`serving_load.served`), load from `serving_load.open_loop`:

1. **fuzz**: schemathesis (its CLI, phases examples, coverage and fuzzing, positive and negative
   data, no shrinking) against the spec at /docs.json, every operation, up to `--examples` cases
   each per round, fuzzing repeated for 3 minutes, check `not_a_server_error`, on the Complete
   Journey workspace. Every request is counted from schemathesis' HAR report:
   `schemathesis_cases`, `schemathesis_5xx` (should be 0).
2. **soak**: /recommend at `--rate` (100) requests a second for `--seconds` (600) on the Complete
   Journey workspace, known customers; resident memory of the server's process tree sampled
   every 10 s. `soak_errors` counts answers that are not 2xx or never came;
   `soak_rss_growth_pct` compares the last sample with the one after the warm-up (60 s, or a
   quarter of a shorter run).
3. **redis**: the production profile's online store: a private `redis-server` on a free port with
   its append-only file under data/benchmarks/redis-faults, beside a small synthetic workspace
   (built on the first run, reused after) materialised into it, the server started with
   OMNISHELF_ONLINE_STORE=redis. Under /recommend load (`--rate` 100, `--seconds` 60;
   customers known and personalised, a fifth named by channel identity) Redis is killed
   (SIGKILL) at 10 s and restarted at 20 s on its append-only file, as a crashed Redis with
   persistence comes back; then it hangs (SIGSTOP) from 35 s to 40 s. Every answer
   must be a 2xx; during the outage and the hang they must say "fallback". `redis_recovery_s`:
   from the restart (the process started again: loading its file is part of recovering) to
   the first of the personalised answers without fallback that follow up to the hang;
   `redis_hang_recovery_s` the same from SIGCONT. `redis_kill_5xx` counts 5xx over the whole
   run; `redis_hang_p99_ms` shows what a hung Redis costs a request: the client's timeouts
   (`Settings.redis_timeout_seconds`) bound one read, and after a failure the online reader
   fails at once for a second (`feature_store.breaker`, pybreaker) instead of waiting each time.

The Complete Journey workspace is the demo's (data/, mlruns/): run `omnishelf demo --once`
first so that both champions are registered. The machine is small and shared: the error and 5xx
counts are the figures here, the latencies only show orders of magnitude.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
from serving_load import ROOT, free_port, open_loop, record, served

from features import synthetic
from features.identity import IDENTITY_KEY
from features.settings import Settings
from pipelines import cli, steps
from training import tracking

SEED = 6
CUSTOMERS = 1000  # distinct customers in a load
FUZZ_EXAMPLES = 500
FUZZ_SECONDS = 180
SOAK = {"rate": 100.0, "seconds": 600.0}
SOAK_WARMUP_S = 60
RSS_EVERY_S = 10
REDIS = {"rate": 100.0, "seconds": 60.0}
# When, in seconds of the load, Redis is killed, restarted, stopped and continued.
KILL_AT, RESTART_AT, STOP_AT, CONT_AT = 10, 20, 35, 40
# Small on purpose: the figures are about failures, not about the size of the data. Built on
# the first run, reused after, with its Redis data (the append-only file) beside it.
REDIS_HOME = ROOT / "data" / "benchmarks" / "redis-faults"
REDIS_WORKSPACE = synthetic.SyntheticConfig(
    n_customers=500, n_stores=3, n_products=40, days=120, seed=SEED
)


def recommend_bodies(settings: Settings, n: int = CUSTOMERS) -> list[dict]:
    """Requests for `n` customers drawn from the workspace's customers, with varied options."""
    customers = pd.read_parquet(settings.tables_dir / "customers.parquet", columns=["customer_id"])
    rng = np.random.default_rng(SEED)
    chosen = rng.choice(customers["customer_id"].to_numpy(), min(n, len(customers)), False)
    return [
        {"customer_id": int(c), "k": int(rng.choice([5, 10, 20])), "reminders": int(r)}
        for c, r in zip(chosen, rng.choice([0, 3], len(chosen)), strict=True)
    ]


def fuzz(examples: int) -> dict:
    settings = steps.complete_journey_workspace()
    schemathesis = Path(sys.executable).parent / "schemathesis"
    with served(settings) as server, tempfile.TemporaryDirectory() as folder:
        har = Path(folder) / "requests.har"
        command = [
            str(schemathesis),
            "run",
            f"{server.url}/docs.json",
            "--checks=not_a_server_error",
            f"--max-examples={examples}",
            f"--max-time={FUZZ_SECONDS}",  # fuzzing repeats (new seeds) until it is spent
            "--phases=examples,coverage,fuzzing",
            "--mode=all",
            f"--seed={SEED}",
            "--no-shrink",
            "--continue-on-failure",
            "--suppress-health-check=all",
            "--request-timeout=30",
            "--report=har",
            f"--report-har-path={har}",
        ]
        began = time.perf_counter()
        # In the temporary folder: schemathesis keeps a cache of past failures to replay in
        # ./.schemathesis, and each run here starts afresh.
        completed = subprocess.run(command, capture_output=True, text=True, cwd=folder)
        seconds = time.perf_counter() - began
        print(completed.stdout[-3000:], completed.stderr[-2000:], sep="\n")
        entries = json.loads(har.read_text())["log"]["entries"] if har.exists() else []
    statuses = np.array([entry["response"]["status"] for entry in entries])
    failed = [
        f"{e['request']['method']} {e['request']['url']} -> {e['response']['status']}"
        for e in entries
        if e["response"]["status"] >= 500
    ]
    if not len(statuses) or completed.returncode not in (0, 1):
        raise RuntimeError(f"schemathesis exited with {completed.returncode} and no requests")
    print("\n".join(failed[:20]))
    return {
        "schemathesis_cases": len(statuses),
        "schemathesis_5xx": int((statuses >= 500).sum()),
        "schemathesis_2xx": int(((statuses >= 200) & (statuses < 300)).sum()),
        "schemathesis_4xx": int(((statuses >= 400) & (statuses < 500)).sum()),
        "schemathesis_max_examples": examples,
        "schemathesis_s": round(seconds, 1),
    }


def soak(rate: float, seconds: float) -> dict:
    settings = steps.complete_journey_workspace()
    bodies = recommend_bodies(settings)
    warmup = min(SOAK_WARMUP_S, seconds / 4)
    samples: list[tuple[float, int]] = []
    with served(settings) as server:

        def sample(elapsed: float) -> None:
            if not samples or elapsed >= samples[-1][0] + RSS_EVERY_S:
                samples.append((elapsed, server.rss_bytes()))

        load = open_loop(f"{server.url}/recommend", bodies, rate, seconds, on_tick=sample)
        samples.append((load.seconds, server.rss_bytes()))
    after_warmup = next(rss for elapsed, rss in samples if elapsed >= warmup)
    errors = load.count(lambda s: (s < 200) | (s >= 300))
    print(json.dumps(load.summary()))
    return {
        "soak_errors": errors,
        "soak_rss_growth_pct": round(100 * (samples[-1][1] / after_warmup - 1), 2),
        "soak_rss_mb": [[round(t), round(rss / 2**20, 1)] for t, rss in samples],
        "soak_requests": len(load.statuses),
        "soak_rate_rps": rate,
        "soak_achieved_rps": round(load.rps, 1),
        "soak_seconds": seconds,
        "soak_warmup_s": warmup,
        "soak_p99_ms": round(load.percentile(99), 1),
    }


class PrivateRedis:
    """`redis-server` on `port` with an append-only file in `folder`: killed, it comes back with
    its data, like a Redis with persistence restarted by its supervisor."""

    def __init__(self, port: int, folder: Path):
        self.port, self.folder = port, folder
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
            + ["--dir", str(self.folder), "--save", "", "--appendonly", "yes"]
            + ["--appendfsync", "everysec", "--daemonize", "no"],
            stdout=subprocess.DEVNULL,
        )

    def answers(self) -> bool:
        import redis

        try:
            return redis.Redis(port=self.port, socket_timeout=0.2).ping()
        except redis.RedisError:
            return False

    def wait_answering(self, timeout: float = 30) -> None:
        """Until it answers PING (its data loaded)."""
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            if self.answers():
                return
            time.sleep(0.02)
        raise TimeoutError(f"redis-server on port {self.port} not answering in {timeout} s")

    def keys(self) -> int:
        import redis

        return redis.Redis(port=self.port).dbsize()

    def signal(self, number: int) -> None:
        self.process.send_signal(number)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
            self.process.wait()


def redis_workspace(store: PrivateRedis) -> Settings:
    """The synthetic workspace on the Redis profile with both champions, built or reused; its
    features are materialised again when Redis has lost them."""
    connection = f"127.0.0.1:{store.port}"
    settings = Settings(home=REDIS_HOME, online_store="redis", redis_connection=connection)
    tracking.configure(
        settings.resolved_tracking_uri, settings.experiment, settings.mlruns_dir / "artifacts"
    )
    began = time.perf_counter()
    steps.ingest(settings, cli._synthetic_source(REDIS_WORKSPACE))
    steps.build_features(settings, force=not store.keys())  # an empty Redis is filled anew
    steps.train_recommender(settings)
    steps.train_forecaster(settings)
    print(f"redis workspace {REDIS_HOME}: {time.perf_counter() - began:.1f} s")
    return settings


def personalised_bodies(settings: Settings, url: str) -> list[dict]:
    """Known customers who get personalised answers, a fifth of them named by channel identity:
    anything else during the run is a fallback."""
    identities = pd.read_parquet(settings.identity_dir / "identity_map.parquet")
    bodies = []
    with httpx.Client(base_url=url, timeout=30) as client:
        for body in recommend_bodies(settings, 200):
            answer = client.post("/recommend", json=body).json()
            if answer.get("personalized") and answer.get("fallback") is None:
                bodies.append(body)
    for body in bodies[::5]:
        keys = identities.loc[identities["customer_id"] == body["customer_id"], IDENTITY_KEY]
        if len(keys):
            channel, channel_customer_id = keys.iloc[0].split(":", 1)
            del body["customer_id"]
            body |= {"channel": channel, "channel_customer_id": channel_customer_id}
    if len(bodies) < 20:
        raise LookupError(f"only {len(bodies)} of 200 customers get personalised answers")
    return bodies


def redis(rate: float, seconds: float) -> dict:
    if seconds < CONT_AT + 10:
        raise ValueError(f"the Redis run needs --seconds of at least {CONT_AT + 10}")
    store = PrivateRedis(free_port(), REDIS_HOME / "redis")
    store.folder.mkdir(parents=True, exist_ok=True)
    try:
        store.start()
        store.wait_answering()
        settings = redis_workspace(store)
        env = {
            "OMNISHELF_ONLINE_STORE": "redis",
            "OMNISHELF_REDIS_CONNECTION": settings.redis_connection,
        }
        with served(settings, env) as server:
            bodies = personalised_bodies(settings, server.url)
            load, times = _faulted_load(store, f"{server.url}/recommend", bodies, rate, seconds)
    finally:
        store.kill()
    return _redis_figures(load, times, rate, seconds)


def _faulted_load(store: PrivateRedis, url: str, bodies: list[dict], rate, seconds):
    """The load with Redis killed, restarted, stopped and continued on schedule; returns it
    and when each happened, in seconds from its start."""
    times: dict[str, float] = {}

    def tick(elapsed: float) -> None:
        if "kill" not in times and elapsed >= KILL_AT:
            store.kill()
            times["kill"] = elapsed
        elif "restart" not in times and elapsed >= RESTART_AT:
            store.start()
            times["restart"] = elapsed
        elif "stop" not in times and elapsed >= STOP_AT:
            store.signal(signal.SIGSTOP)
            times["stop"] = elapsed
        elif "cont" not in times and elapsed >= CONT_AT:
            store.signal(signal.SIGCONT)
            times["cont"] = elapsed

    load = open_loop(url, bodies, rate, seconds, keep=True, on_tick=tick)
    print(json.dumps(load.summary()), json.dumps(times))
    return load, times


def _redis_figures(load, times: dict[str, float], rate: float, seconds: float) -> dict:
    due = np.arange(len(load.statuses)) / rate
    fallback = np.array([bool(b and b.get("fallback")) for b in load.bodies])
    personal = np.array(
        [bool(b and b.get("personalized") and not b.get("fallback")) for b in load.bodies]
    )
    ok = (load.statuses >= 200) & (load.statuses < 300)
    outage = (due >= times["kill"]) & (due < times["restart"])
    hang = (due >= times["stop"]) & (due < times["cont"])

    def recovery(start: float, end: float) -> float | None:
        """Seconds from `start` until every answer up to `end` is personalised again."""
        window = np.flatnonzero((due >= start) & (due < end))
        missed = window[~(ok & personal)[window]]
        if not len(missed):
            return 0.0
        if missed[-1] == window[-1]:
            return None  # not recovered before `end`
        return round(float(due[missed[-1] + 1] - start), 2)

    reasons = {b.get("fallback") for b in load.bodies if b and b.get("fallback")}
    print("fallback reasons:", reasons)
    return {
        "redis_kill_5xx": load.count(lambda s: s >= 500),
        "redis_no_answer": load.count(lambda s: s == 0),
        "redis_outage_fallback_share": round(float((ok & fallback)[outage].mean()), 4),
        "redis_outage_s": round(times["restart"] - times["kill"], 2),
        "redis_recovery_s": recovery(times["restart"], times["stop"]),
        "redis_hang_5xx": int((load.statuses[hang] >= 500).sum()),
        "redis_hang_fallback_share": round(float((ok & fallback)[hang].mean()), 4),
        "redis_hang_p99_ms": round(float(np.percentile(load.latencies_ms[hang], 99)), 1),
        "redis_hang_recovery_s": recovery(times["cont"], seconds),
        "redis_requests": len(load.statuses),
        "redis_load": (
            f"/recommend at {rate:g} rps for {seconds:g} s; Redis killed at {times['kill']:.1f} s, "
            f"restarted at {times['restart']:.1f} s, "
            f"stopped {times['stop']:.1f}-{times['cont']:.1f} s"
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", nargs="?", default="all", choices=["fuzz", "soak", "redis", "all"])
    parser.add_argument("--rate", type=float, help="requests a second (soak, redis)")
    parser.add_argument("--seconds", type=float, help="length of the load (soak, redis)")
    parser.add_argument("--examples", type=int, default=FUZZ_EXAMPLES, help="cases per operation")
    arguments = parser.parse_args()
    load = {k: v for k, v in (("rate", arguments.rate), ("seconds", arguments.seconds)) if v}
    if arguments.what in ("fuzz", "all"):
        record(fuzz(arguments.examples))
    if arguments.what in ("soak", "all"):
        record(soak(**(SOAK | load)))
    if arguments.what in ("redis", "all"):
        record(redis(**(REDIS | load)))


if __name__ == "__main__":
    main()
