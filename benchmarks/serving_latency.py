"""/recommend latency and throughput on Complete Journey, against the floor of the same server.

    .venv/bin/python benchmarks/serving_latency.py     # -> results/serving.json (recommend_*)

The real server (`bentoml serve`, one worker) on the default workspace (the demo's data,
features and champions), on loopback, with the load generator on the same 2 cores:

1. `recommend_p50_ms`, `recommend_p99_ms`: /recommend, k=10 with 3 reminders, for known
   customers drawn at random, at a fixed 200 requests/s for 60 s (open loop: latency counts
   from when a request was due). Each answer reads the customer's profile from the online
   store (consent, freshness, the version its kept ranked list was made from).
2. `floor_p50_ms`, `floor_p99_ms`: GET /livez of the same server at the same rate: a route that
   does no work, so the overhead of omnishelf's own work is the ratio of the two.
3. `max_rps`: /recommend as fast as 32 concurrent callers get answers, for 20 s.
4. `recommend_cold_ms`: the median of requests whose list is not kept (a store other than the
   customer's usual one), which rank the customer in full.
5. In this process, on `Omnishelf.inner()`: `recommend_in_process_ms`, the handler alone for
   500 customers once its lists are made (what omnishelf adds to the HTTP floor);
   `rank_in_full_ms`, ranking one customer in full instead (median of 50);
   `start_up_ranking_s`, from creating the service to its lists being made (models loaded,
   every known customer ranked); `full_gc_ms`, one full garbage collection over its heap.
"""

from __future__ import annotations

import gc
import time

import httpx
import numpy as np
import pandas as pd
from serving_load import closed_loop, open_loop, record, served

from pipelines import steps

RATE, SECONDS = 200, 60


def in_process(customers: list[int]) -> dict:
    """The service object in this process, once its lists are made: its handler per request,
    what ranking one customer in full costs instead, the start-up ranking, and what one full
    garbage collection over its heap would take (it is frozen after start-up for that)."""
    from serving.service import Omnishelf

    began = time.perf_counter()
    service = Omnishelf.inner()
    while service.warming:
        time.sleep(0.1)
    ahead_s = time.perf_counter() - began
    for customer in customers[:50]:
        service.recommend(customer_id=customer)
    began = time.perf_counter()
    for customer in customers:
        service.recommend(customer_id=customer)
    handler_ms = (time.perf_counter() - began) / len(customers) * 1e3
    model = service.champions["recommender"].model
    in_full = []
    for customer in customers[:50]:
        began = time.perf_counter()
        model.rank(np.array([customer]), 10, lookup=service.ranker_features)
        in_full.append((time.perf_counter() - began) * 1e3)
    gc.unfreeze()
    began = time.perf_counter()
    gc.collect()
    full_gc_ms = (time.perf_counter() - began) * 1e3
    gc.freeze()
    return {
        "recommend_in_process_ms": round(handler_ms, 3),
        "rank_in_full_ms": round(float(np.median(in_full)), 1),
        "start_up_ranking_s": round(ahead_s, 1),
        "full_gc_ms": round(full_gc_ms, 1),
    }


def main() -> None:
    settings = steps.complete_journey_workspace()
    customers = pd.read_parquet(settings.tables_dir / "customers.parquet")
    stores = sorted(pd.read_parquet(settings.tables_dir / "stores.parquet")["store_id"])
    rng = np.random.default_rng(0)
    picked = rng.choice(customers["customer_id"].to_numpy(), 2000).tolist()
    bodies = [{"customer_id": int(c), "k": 10, "reminders": 3} for c in picked]
    with served(settings) as server:
        open_loop(f"{server.url}/recommend", bodies, 100, 5)  # warm-up
        load = open_loop(f"{server.url}/recommend", bodies, RATE, SECONDS, keep=True)
        personal = np.mean([bool(b and b.get("personalized")) for b in load.bodies])
        floor = open_loop(f"{server.url}/livez", [None], RATE, 30, method="GET")
        busiest = closed_loop(f"{server.url}/recommend", bodies, 32, 20)
        cold = []
        with httpx.Client(base_url=server.url, timeout=30) as client:
            for customer, store in zip(picked[:20], stores[-20:], strict=True):
                began = time.perf_counter()
                client.post("/recommend", json={"customer_id": customer, "store_id": store})
                cold.append((time.perf_counter() - began) * 1e3)
    handler = in_process(picked[:500])
    print("recommend", load.summary(), f"personalised {personal:.3f}")
    print("floor    ", floor.summary())
    print("max      ", busiest.summary())
    record(
        {
            "recommend_p50_ms": round(load.percentile(50), 2),
            "recommend_p99_ms": round(load.percentile(99), 2),
            "recommend_rps": round(load.rps, 1),
            "recommend_errors": load.summary()["errors"],
            "recommend_personalised_share": round(float(personal), 3),
            "floor_p50_ms": round(floor.percentile(50), 2),
            "floor_p99_ms": round(floor.percentile(99), 2),
            "overhead_p99_ratio": round(load.percentile(99) / floor.percentile(99), 2),
            "max_rps": round(busiest.rps, 1),
            "max_rps_errors": busiest.summary()["errors"],
            "recommend_cold_ms": round(float(np.median(cold)), 1),
            **handler,
        }
    )


if __name__ == "__main__":
    main()
