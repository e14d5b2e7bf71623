"""Feature-layer figures on Complete Journey, on both profiles.

    .venv/bin/python benchmarks/features.py            # writes benchmarks/results/features.json

1. Materialise every view from scratch: embedded (SQLite online, file registry) and production
   (Redis online, SQL registry on PostgreSQL at 127.0.0.1).
2. Online read of `recommender_v1` (freshness included) for 1 and for 100 customers: p99 over
   many reads, after a warm-up, on each profile.
3. Point-in-time join of 1M entity rows (customer x snapshot time) against `recommender_v1`.

It works in a workspace of its own under /tmp and a Feast project of its own in the shared
services, both removed at the end.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from features.contract import CUSTOMER_ID  # noqa: E402
from features.engineering import EVENT_TIMESTAMP  # noqa: E402
from features.feature_store import (  # noqa: E402
    OnlineReader,
    data_clock,
    historical_features,
    open_store,
)
from features.settings import Settings  # noqa: E402
from pipelines import steps  # noqa: E402

POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
READS = 2000
HISTORICAL_ROWS = 1_000_000


def p99_ms(reader: OnlineReader, rows: list[dict], as_of, reads: int = READS) -> float:
    for _ in range(50):  # warm-up: connections, registry cache
        reader.read(rows, as_of)
    took = np.empty(reads)
    for i in range(reads):
        began = time.perf_counter()
        reader.read(rows, as_of)
        took[i] = time.perf_counter() - began
    return float(np.percentile(took, 99) * 1000)


def profile_figures(settings: Settings, name: str, customers: np.ndarray) -> dict:
    began = time.perf_counter()
    _, summaries = steps.build_features(settings)
    wall = time.perf_counter() - began
    rows = sum(s.rows for s in summaries)
    materialise = sum(s.seconds for s in summaries)
    print(
        f"[{name}] materialised {rows:,} rows in {materialise:.1f} s "
        f"({wall:.1f} s with feature tables and apply)"
    )
    store = open_store(settings)
    clock = data_clock(store, ["customer_profile"])
    reader = OnlineReader(store, "recommender_v1")
    rng = np.random.default_rng(0)
    one = [{CUSTOMER_ID: int(rng.choice(customers))}]
    hundred = [{CUSTOMER_ID: int(c)} for c in rng.choice(customers, 100, replace=False)]
    assert reader.read(hundred, clock)["orders_91d"].notna().all(), "online rows missing"
    figures = {
        f"materialize_s_{name}": round(materialise, 1),
        f"features_step_s_{name}": round(wall, 1),
        f"online_p99_ms_1_{name}": round(p99_ms(reader, one, clock), 2),
        f"online_p99_ms_100_{name}": round(p99_ms(reader, hundred, clock, READS // 4), 2),
    }
    print(f"[{name}] {figures}")
    return figures


def main() -> None:
    home = Path(tempfile.mkdtemp(prefix="omnishelf-bench-"))
    embedded = Settings(home=home)
    production = Settings(
        home=home,
        online_store="redis",
        registry_url=POSTGRES_URL,
        feast_project=f"bench_{int(time.time())}",
    )
    try:
        steps.ingest(embedded, steps.complete_journey_source())
        customers = pd.read_parquet(embedded.tables_dir / "customers.parquet")[CUSTOMER_ID]
        figures = profile_figures(embedded, "sqlite", customers.to_numpy())
        # Same offline tables (the fingerprint marker says so): only apply + materialise run.
        figures |= profile_figures(production, "redis", customers.to_numpy())

        store = open_store(embedded)
        stamps = pd.read_parquet(
            embedded.feast_dir / "offline" / "customer_profile.parquet", columns=[EVENT_TIMESTAMP]
        )[EVENT_TIMESTAMP].dt.tz_convert(None)
        rng = np.random.default_rng(1)
        span = (stamps.max() - stamps.min()).total_seconds()
        entity = pd.DataFrame(
            {
                CUSTOMER_ID: rng.choice(customers.to_numpy(), HISTORICAL_ROWS),
                EVENT_TIMESTAMP: stamps.min()
                + pd.to_timedelta(rng.uniform(0, span, HISTORICAL_ROWS), unit="s").floor("s"),
            }
        )
        began = time.perf_counter()
        joined = historical_features(store, "recommender_v1", entity)
        figures["historical_1m_rows_s"] = round(time.perf_counter() - began, 1)
        assert len(joined) == HISTORICAL_ROWS
        print(f"historical join of {len(joined):,} rows: {figures['historical_1m_rows_s']} s")
    finally:
        try:
            steps.reset_feature_store(production)
        finally:
            shutil.rmtree(home, ignore_errors=True)
    out = ROOT / "benchmarks" / "results" / "features.json"
    steps.write_results(out, figures)
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
