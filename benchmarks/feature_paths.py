"""Before/after figures of the two feature-read paths omnishelf changed, on Complete Journey.

    .venv/bin/python benchmarks/feature_paths.py     # writes benchmarks/results/feature_paths.json

1. Online `recommender_v1` on the embedded profile (SQLite): Feast's `get_online_features` +
   `to_dict` (the way before) against `OnlineReader.read` (one `online_read` per view, service
   resolved once, freshness included), median and p99 for 1 and 100 customers.
2. Point-in-time join of 100,000 entity rows against `recommender_v1`: Feast's Dask file store
   (the way before) against its DuckDB store, over the same parquet files; rows returned too
   (the Dask store drops entity rows that have no feature row yet).

It works in a workspace of its own under /tmp, removed at the end.
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
    read_offline_table,
    repo_config,
)
from features.settings import Settings  # noqa: E402
from pipelines import steps  # noqa: E402

READS = 1000
JOIN_ROWS = 100_000


def timings_ms(read, reads: int) -> tuple[float, float]:
    for _ in range(30):  # warm-up: connections, registry cache
        read()
    took = np.empty(reads)
    for i in range(reads):
        began = time.perf_counter()
        read()
        took[i] = time.perf_counter() - began
    return float(np.median(took) * 1000), float(np.percentile(took, 99) * 1000)


def online_figures(settings: Settings, customers: np.ndarray) -> dict:
    store = open_store(settings)
    service = store.get_feature_service("recommender_v1")
    reader = OnlineReader(store, "recommender_v1")
    clock = data_clock(store, ["customer_profile"])
    rng = np.random.default_rng(0)
    figures = {}
    for size in (1, 100):
        rows = [{CUSTOMER_ID: int(c)} for c in rng.choice(customers, size, replace=False)]
        reads = READS if size == 1 else READS // 4
        ways = {
            "feast_get_online_features": lambda rows=rows: store.get_online_features(
                features=service, entity_rows=rows
            ).to_dict(include_event_timestamps=True),
            "online_reader": lambda rows=rows: reader.read(rows, clock),
        }
        for way, read in ways.items():
            median, p99 = timings_ms(read, reads)
            figures[f"online_{size}_{way}_median_ms"] = round(median, 2)
            figures[f"online_{size}_{way}_p99_ms"] = round(p99, 2)
    return figures


def join_figures(settings: Settings, customers: np.ndarray) -> dict:
    from feast import FeatureStore
    from feast.repo_config import RepoConfig

    stamps = read_offline_table(settings, "customer_profile")[EVENT_TIMESTAMP]
    rng = np.random.default_rng(1)
    span = (stamps.max() - stamps.min()).total_seconds()
    entity = pd.DataFrame(
        {
            CUSTOMER_ID: rng.choice(customers, JOIN_ROWS),
            EVENT_TIMESTAMP: stamps.min()
            + pd.to_timedelta(rng.uniform(0, span, JOIN_ROWS), unit="s").floor("s"),
        }
    )
    figures = {}
    for engine in ("dask", "duckdb"):
        config = {**repo_config(settings), "offline_store": {"type": engine}}
        if engine == "dask":
            config["offline_store"] = {"type": "file"}  # Feast's name for its Dask store
        store = FeatureStore(config=RepoConfig(repo_path=settings.feast_dir, **config))
        began = time.perf_counter()
        joined = historical_features(store, "recommender_v1", entity)
        figures[f"join_100k_{engine}_s"] = round(time.perf_counter() - began, 1)
        figures[f"join_100k_{engine}_rows"] = len(joined)
        print(f"{engine}: {figures[f'join_100k_{engine}_s']} s, {len(joined):,} rows")
    return figures


def main() -> None:
    home = Path(tempfile.mkdtemp(prefix="omnishelf-paths-"))
    settings = Settings(home=home)
    try:
        steps.ingest(settings, steps.complete_journey_source())
        steps.build_features(settings)
        customers = pd.read_parquet(settings.tables_dir / "customers.parquet")[CUSTOMER_ID]
        figures = online_figures(settings, customers.to_numpy())
        figures |= join_figures(settings, customers.to_numpy())
    finally:
        shutil.rmtree(home, ignore_errors=True)
    steps.write_results(ROOT / "benchmarks" / "results" / "feature_paths.json", figures)
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
