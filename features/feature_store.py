"""The Feast feature store of a workspace: configured from settings, applied, materialised, read.

The embedded default is a parquet offline store, a SQLite online store and a file registry; the
production profile (OMNISHELF_ONLINE_STORE=redis, OMNISHELF_REGISTRY_URL=postgresql://...) swaps
in Redis and a SQL registry without touching code.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import yaml
from tqdm import tqdm

from features.dataset import write_atomically
from features.engineering import EVENT_TIMESTAMP
from features.settings import Settings

log = logging.getLogger(__name__)


def repo_config(settings: Settings) -> dict:
    """feature_store.yaml of the workspace, as a dict."""
    feast_dir = settings.feast_dir
    if settings.online_store == "redis":
        online = {"type": "redis", "connection_string": settings.redis_connection}
    else:
        online = {"type": "sqlite", "path": str(feast_dir / "online_store.db")}
    if settings.registry_url:
        registry = {"registry_type": "sql", "path": settings.registry_url, "cache_ttl_seconds": 60}
    else:
        registry = {"path": str(feast_dir / "registry.db"), "cache_ttl_seconds": 60}
    return {
        "project": settings.feast_project,
        "provider": "local",
        "registry": registry,
        "online_store": online,
        "offline_store": {"type": "file"},
        "entity_key_serialization_version": 3,
    }


def open_store(settings: Settings):
    """The workspace's FeatureStore; writes feature_store.yaml so the `feast` CLI works too."""
    from feast import FeatureStore

    settings.feast_dir.mkdir(parents=True, exist_ok=True)
    config_file = settings.feast_dir / "feature_store.yaml"
    text = yaml.safe_dump(repo_config(settings), sort_keys=False)
    if not config_file.exists() or config_file.read_text() != text:
        write_atomically(config_file, lambda path: path.write_text(text))
    return FeatureStore(repo_path=str(settings.feast_dir))


def write_offline_tables(settings: Settings, tables: dict[str, pd.DataFrame]) -> None:
    """Write the feature tables the views read, each atomically."""
    from features.repo.definitions import FEATURE_TABLES

    for view, frame in tables.items():
        stamped = as_utc(frame)
        write_atomically(
            settings.feast_dir / FEATURE_TABLES[view],
            lambda path, stamped=stamped: stamped.to_parquet(path, index=False),
        )


def as_utc(frame: pd.DataFrame) -> pd.DataFrame:
    """Feast reads naive stamps as UTC, but converts them one value at a time in Python
    (~0.6 ms per entity row); stamping them UTC up front keeps joins vectorised."""
    if frame[EVENT_TIMESTAMP].dt.tz is None:
        frame = frame.assign(**{EVENT_TIMESTAMP: frame[EVENT_TIMESTAMP].dt.tz_localize("UTC")})
    return frame


def apply_definitions(store) -> None:
    """Register the definitions in the store's registry.

    Copies are applied: Feast's SQL registry writes the stored materialisation intervals back
    into the objects it is given, and the module's objects would carry one registry's history
    into the next store this process opens (which would then skip materialising).
    """
    from features.repo.definitions import DEFINITIONS

    store.apply(copy.deepcopy(DEFINITIONS))


@dataclass(frozen=True)
class MaterializeSummary:
    view: str
    start: datetime | None
    end: datetime
    rows: int
    entities: int
    seconds: float


def materialize(settings: Settings, store) -> list[MaterializeSummary]:
    """Load into the online store what it does not hold yet (incremental and idempotent).

    Each view resumes at the end of its last materialisation interval, so a rerun without new
    data writes nothing.
    """
    from features.repo.definitions import FEATURE_TABLES

    summaries = []
    views = tqdm(FEATURE_TABLES.items(), desc="materialise", unit="view", disable=None)
    for view_name, relative in views:
        views.set_postfix_str(view_name)
        view = store.get_feature_view(view_name)
        keys = [column.name for column in view.entity_columns]
        frame = pd.read_parquet(settings.feast_dir / relative, columns=[*keys, EVENT_TIMESTAMP])
        stamps = frame[EVENT_TIMESTAMP].dt.tz_convert(None)
        end = (stamps.max() + pd.Timedelta(seconds=1)).to_pydatetime()
        done = [interval[1].replace(tzinfo=None) for interval in view.materialization_intervals]
        start = max(done) if done else (stamps.min() - pd.Timedelta(seconds=1)).to_pydatetime()
        fresh = frame[(stamps >= start) & (stamps < end)]
        began = time.perf_counter()
        if len(fresh):
            store.materialize(start_date=start, end_date=end, feature_views=[view_name])
        summaries.append(
            MaterializeSummary(
                view_name,
                start,
                end,
                len(fresh),
                len(fresh.drop_duplicates(keys)),
                time.perf_counter() - began,
            )
        )
    return summaries


def historical_features(store, service: str, entity_frame: pd.DataFrame) -> pd.DataFrame:
    """Point-in-time join: each row gets the latest features stamped at or before its timestamp.

    Rows come back in the entity frame's order, with naive timestamps like the input.
    """
    entities = as_utc(entity_frame.reset_index(drop=True).assign(_row=lambda f: range(len(f))))
    joined = store.get_historical_features(
        entity_df=entities, features=store.get_feature_service(service)
    ).to_df()
    joined = joined.sort_values("_row").drop(columns="_row").reset_index(drop=True)
    joined[EVENT_TIMESTAMP] = joined[EVENT_TIMESTAMP].dt.tz_convert(None)
    return joined


class OnlineReader:
    """Latest features of one feature service per entity row, with their freshness.

    Feast ignores TTL on online reads, so the answer says it: `feature_ts` is the oldest stamp of
    the row's features (NaT when the online store has none) and `stale` is true when it is older
    than the shortest TTL of the service's views at `as_of` (default: now). The caller decides the
    fallback. The service definition and its TTL are looked up once, not per read.
    """

    def __init__(self, store, service: str):
        self.store = store
        self.service = store.get_feature_service(service)
        ttls = [
            store.get_feature_view(projection.name).ttl
            for projection in self.service.feature_view_projections
        ]
        ttls = [t for t in ttls if t and t.total_seconds() > 0]  # a TTL of 0 never expires
        self.ttl_seconds = min(t.total_seconds() for t in ttls) if ttls else float("inf")

    def read(self, entity_rows: list[dict], as_of: datetime | None = None) -> pd.DataFrame:
        from feast.online_response import TIMESTAMP_POSTFIX

        response = self.store.get_online_features(features=self.service, entity_rows=entity_rows)
        values = response.to_dict(include_event_timestamps=True)
        stamps = [values.pop(k) for k in list(values) if k.endswith(TIMESTAMP_POSTFIX)]
        seconds = np.array(stamps, dtype="int64").reshape(len(stamps), -1)
        present = seconds > 0  # Feast gives 0 for a feature the online store does not hold
        known = present.any(axis=0)
        oldest = np.where(present, seconds, np.iinfo(np.int64).max).min(axis=0)
        if as_of is None:
            now = time.time()
        else:  # naive stamps are UTC here, as in the offline tables
            now = (as_of if as_of.tzinfo else as_of.replace(tzinfo=UTC)).timestamp()
        frame = pd.DataFrame(values)
        frame["feature_ts"] = pd.to_datetime(np.where(known, oldest, 0), unit="s").where(known)
        frame["stale"] = known & (now - oldest > self.ttl_seconds)
        return frame


def online_features(
    store, service: str, entity_rows: list[dict], as_of: datetime | None = None
) -> pd.DataFrame:
    """One read with an `OnlineReader` (build the reader once when reading often)."""
    return OnlineReader(store, service).read(entity_rows, as_of)


def data_clock(store, views: list[str] | None = None) -> datetime | None:
    """End of the newest materialisation: "now" for replayed history."""
    ends = [
        interval[1]
        for view in store.list_feature_views()
        if views is None or view.name in views
        for interval in view.materialization_intervals
    ]
    return max(ends).replace(tzinfo=None) if ends else None


def write_online(store, view: str, frame: pd.DataFrame) -> None:
    """Write rows straight to the online store (a merge, an opt-out, a forget), bypassing
    materialisation so they count at once."""
    store.write_to_online_store(view, as_utc(frame))
