"""The Feast feature store of a workspace: configured from settings, applied, materialised, read.

The embedded default is a parquet offline store, a SQLite online store and a file registry; the
production profile (OMNISHELF_ONLINE_STORE=redis, OMNISHELF_REGISTRY_URL=postgresql://...) swaps
in Redis and a SQL registry without touching code.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import repeat
from operator import itemgetter
from pathlib import Path

import numpy as np
import pandas as pd
import pybreaker
import yaml
from tqdm import tqdm

from features.contract import CUSTOMER_ID, PRODUCT_ID, STORE_ID
from features.dataset import write_atomically
from features.engineering import EVENT_TIMESTAMP
from features.settings import Settings

log = logging.getLogger(__name__)


def repo_config(settings: Settings) -> dict:
    """feature_store.yaml of the workspace, as a dict."""
    feast_dir = settings.feast_dir
    if settings.online_store == "redis":
        online = {"type": "redis", "connection_string": redis_connection_string(settings)}
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
        "offline_store": {"type": "duckdb"},
        "entity_key_serialization_version": 3,
    }


def redis_connection_string(settings: Settings) -> str:
    """Feast's Redis connection string with the client options a service needs under faults,
    unless the configured string sets them: redis-py waits forever for a hung server and retries
    a dead one 3 times with backoff (up to 14 s), so a read fails after the timeout instead, with
    no retry, and the next read connects again."""
    given = settings.redis_connection
    named = {part.split("=", 1)[0].strip() for part in given.split(",") if "=" in part}
    timeout = settings.redis_timeout_seconds
    options = {"socket_timeout": timeout, "socket_connect_timeout": timeout, "retry": "null"}
    return ",".join([given, *(f"{k}={v}" for k, v in options.items() if k not in named)])


def open_store(settings: Settings):
    """The workspace's FeatureStore; writes feature_store.yaml so the `feast` CLI works too."""
    from feast import FeatureStore

    # Feast's DuckDB store calls an ibis method that DuckDB 2 deprecates, and Feast's import
    # shows every deprecation once: nothing for users to act on. Set after that import.
    warnings.filterwarnings("ignore", "fetch_arrow_table", DeprecationWarning)
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


def _in_ns(frame: pd.DataFrame) -> pd.DataFrame:
    """Naive stamps in one unit, so that equal rows hash equal whatever wrote them."""
    return frame.assign(**{EVENT_TIMESTAMP: frame[EVENT_TIMESTAMP].astype("datetime64[ns]")})


def read_offline_table(settings: Settings, view: str) -> pd.DataFrame:
    """A view's feature table as written, stamps naive again."""
    from features.repo.definitions import FEATURE_TABLES

    path = settings.feast_dir / FEATURE_TABLES[view]
    if not path.exists():
        raise FileNotFoundError(f"no feature table {path}: run `omnishelf features materialize`")
    frame = pd.read_parquet(path)
    return frame.assign(**{EVENT_TIMESTAMP: frame[EVENT_TIMESTAMP].dt.tz_convert(None)})


def as_utc(frame: pd.DataFrame) -> pd.DataFrame:
    """Stamps marked UTC: Feast reads naive stamps as UTC anyway, and some of its engines convert
    naive ones one value at a time in Python (Dask: ~0.6 ms per entity row)."""
    if frame[EVENT_TIMESTAMP].dt.tz is None:
        frame = frame.assign(**{EVENT_TIMESTAMP: frame[EVENT_TIMESTAMP].dt.tz_localize("UTC")})
    return frame


def apply_definitions(store) -> None:
    """Register the definitions in the store's registry, sources pointing into this workspace.

    Copies are applied: Feast's SQL registry writes the stored materialisation intervals back
    into the objects it is given, and the module's objects would carry one registry's history
    into the next store this process opens (which would then skip materialising). The DuckDB
    offline store reads source paths as given, not against the repo, hence absolute ones.
    """
    from features.repo.definitions import DEFINITIONS

    definitions = copy.deepcopy(DEFINITIONS)
    for definition in definitions:
        source = getattr(definition, "batch_source", None)
        if source is not None:
            source.file_options.uri = str(Path(store.repo_path) / source.path)
    store.apply(definitions)


def history_unchanged(settings: Settings, tables: dict[str, pd.DataFrame]) -> bool:
    """Whether new feature tables only add to the stored ones: every stored row stamped before
    the stored table's last stamp is still there, unchanged, and rows added before it belong to
    new entities only (a store x product series that starts selling later has zeros before).

    Then materialising can resume where it ended (only the new days are loaded); otherwise the
    online store holds rows that the new tables contradict and must be rebuilt. The last stamp
    is left out: "as of the last day" snapshots are superseded by later rows.
    """
    for view, frame in tables.items():
        try:
            stored = _in_ns(read_offline_table(settings, view))
        except FileNotFoundError:
            return False
        new = _in_ns(frame)
        if list(stored.columns) != list(new.columns):
            return False
        cutoff = stored[EVENT_TIMESTAMP].max()
        if new[EVENT_TIMESTAMP].max() <= cutoff:
            return False  # no new days: a restated last day must reach the online store
        stored, new = (f[f[EVENT_TIMESTAMP] < cutoff] for f in (stored, new))
        kept = pd.util.hash_pandas_object(stored, index=False).to_numpy()
        rows = pd.util.hash_pandas_object(new, index=False).to_numpy()
        if not np.isin(kept, rows).all():
            return False
        keys = [c for c in (CUSTOMER_ID, STORE_ID, PRODUCT_ID) if c in new]
        added = new[~np.isin(rows, kept)]
        if pd.MultiIndex.from_frame(added[keys]).isin(pd.MultiIndex.from_frame(stored[keys])).any():
            return False
    return True


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


def historical_view_features(store, service: str, entity_frame: pd.DataFrame) -> pd.DataFrame:
    """Point-in-time features of every view of `service`, named `view__feature`, joined view by
    view on that view's own keys: a customer x product frame asks for each customer's and each
    product's features once per timestamp instead of once per row."""
    joined = entity_frame.reset_index(drop=True)
    for projection in store.get_feature_service(service).feature_view_projections:
        view = store.get_feature_view(projection.name)
        keys = [column.name for column in view.entity_columns] + [EVENT_TIMESTAMP]
        distinct = joined[keys].drop_duplicates()
        found = store.get_historical_features(
            entity_df=as_utc(distinct),
            features=[f"{view.name}:{feature.name}" for feature in projection.features],
            full_feature_names=True,
        ).to_df()
        found[EVENT_TIMESTAMP] = found[EVENT_TIMESTAMP].dt.tz_convert(None)
        joined = joined.merge(found, on=keys, how="left")
    return joined


# After a failed read of a networked online store, how long reads fail at once (see `breaker`).
FAIL_FAST_SECONDS = 1.0


def breaker(pause: float = FAIL_FAST_SECONDS) -> pybreaker.CircuitBreaker:
    """After a failure, calls fail at once (pybreaker.CircuitBreakerError) for `pause` seconds
    instead of each waiting for a store that is down or hung (a client timeout per call, while
    the service's request threads queue behind it); then one call tries the store again
    (half-open): success closes the circuit, failure opens it for another pause. The failing
    call itself raises its own error. Reads go through `calling()`, not `call()`: `call` holds
    the breaker's lock for the whole read, so concurrent request threads would read one at a
    time, while `calling` takes it only to check and record the state."""
    return pybreaker.CircuitBreaker(fail_max=1, reset_timeout=pause, throw_new_error_on_trip=False)


class OnlineReader:
    """Latest features of one feature service per entity row, with their freshness.

    Feast ignores TTL on online reads, so the answer says it: `feature_ts` is the oldest stamp of
    the row's features (NaT when the online store has none) and `stale` is true when a view's
    features are older than that view's TTL at `as_of` (default: now). The caller decides the
    fallback.

    The service's views are looked up once, then each read is one `online_read` of Feast's
    online store per view (on SQLite, one bulk query of our own, `_sqlite_read`):
    `FeatureStore.get_online_features` resolves the service in the registry and builds a
    response proto on every call, which costs more as rows grow (100 customers on SQLite: 20.7
    -> 16.9 ms median, 40 -> 24 ms p99; benchmarks/feature_paths.py).
    """

    def __init__(
        self, store, service: str, views: list[str] | None = None, full_feature_names=False
    ):
        """`views` reads only those views of the service; `full_feature_names` names columns
        `view__feature` as the offline join does."""
        from feast.infra.online_stores.sqlite import SqliteOnlineStore

        self.config = store.config
        self.provider = store._get_provider()
        online_store = self.provider.online_store
        self.sqlite = online_store if isinstance(online_store, SqliteOnlineStore) else None
        self.breaker = breaker()  # a networked store (Redis) may be down or hung
        self.views = []
        self.names = {}
        for projection in store.get_feature_service(service).feature_view_projections:
            if views is not None and projection.name not in views:
                continue
            view = store.get_feature_view(projection.name)
            keys = {column.name: column.dtype.to_value_type() for column in view.entity_columns}
            features = [feature.name for feature in projection.features]
            self.views.append((view, keys, features))
            for feature in features:
                self.names[(view.name, feature)] = (
                    f"{view.name}__{feature}" if full_feature_names else feature
                )

    def read(self, entity_rows: list[dict], as_of: datetime | None = None) -> pd.DataFrame:
        return pd.DataFrame(self.read_columns(entity_rows, as_of))

    def read_columns(self, entity_rows: list[dict], as_of: datetime | None = None) -> dict:
        """`read` as a dict of columns: building the frame costs more than the read itself
        for one row (about 1 ms), which a per-request caller reading three columns skips."""
        if as_of is None:
            now = time.time()
        else:  # naive stamps are UTC here, as in the offline tables
            now = (as_of if as_of.tzinfo else as_of.replace(tzinfo=UTC)).timestamp()
        columns: dict[str, list] = {}
        oldest = np.full(len(entity_rows), np.inf)
        stale = np.zeros(len(entity_rows), bool)
        for view, keys, features in self.views:
            for name in keys:
                columns.setdefault(name, [row[name] for row in entity_rows])
            stamps, found = self._read_view(view, keys, features, entity_rows)
            stamps[stamps <= 0] = np.nan  # Redis answers epoch 0 for an entity it lacks
            # A view without a row for the entity adds no stamp and is not stale.
            if view.ttl and view.ttl.total_seconds() > 0:  # a TTL of 0 never expires
                stale |= now - np.nan_to_num(stamps, nan=now) > view.ttl.total_seconds()
            oldest = np.fmin(oldest, np.where(np.isnan(stamps), np.inf, stamps))
            for feature in features:
                columns[self.names[(view.name, feature)]] = found[feature]
        known = np.isfinite(oldest)
        stamps = np.full(len(entity_rows), np.datetime64("NaT"), "datetime64[s]")
        stamps[known] = oldest[known].astype("int64")
        columns["feature_ts"] = stamps
        columns["stale"] = stale
        return columns

    def _read_view(
        self, view, keys: dict, features: list[str], entity_rows: list[dict]
    ) -> tuple[np.ndarray, dict[str, list]]:
        """Epoch seconds of each row's features in `view` (NaN: none stored) and the values of
        `features`, one list each (None: absent or unset)."""
        if self.sqlite is not None:
            version = self.config.entity_key_serialization_version
            serialized = _serialized_keys(keys, entity_rows, version)
            return _sqlite_read(self.sqlite, self.config, view, serialized, features)
        # A copy: Feast's Redis store appends its timestamp key to the list it is given.
        with self.breaker.calling():
            found = self.provider.online_read(
                self.config, view, _entity_keys(keys, entity_rows), list(features)
            )
        stamps = np.array([ts.replace(tzinfo=UTC).timestamp() if ts else np.nan for ts, _ in found])
        return stamps, {
            feature: [_python_value(row, feature) for _, row in found] for feature in features
        }


class OnlineFeatureLookup:
    """Online features of every view of a service for rows of mixed entities (customer x product
    x store), named `view__feature` like `historical_view_features`: each view is read once per
    distinct key. Views in `cached` (slow-moving product and store profiles) are kept after the
    first read, so a ranked list of 200 products costs one customer read, until `clear` (newer
    data was materialised)."""

    def __init__(self, store, service: str, cached: tuple[str, ...] = ()):
        self.readers = {
            projection.name: OnlineReader(
                store, service, views=[projection.name], full_feature_names=True
            )
            for projection in store.get_feature_service(service).feature_view_projections
        }
        self.cached = set(cached)
        self.cache: dict[str, pd.DataFrame] = {}
        # Request threads share the cache: two adding the same key would duplicate its rows.
        self.lock = threading.Lock()

    def clear(self) -> None:
        """Forget the kept rows: the next read of each view asks the online store again."""
        with self.lock:
            self.cache.clear()

    def __call__(self, keys: pd.DataFrame) -> pd.DataFrame:
        joined = keys.reset_index(drop=True)
        for name, reader in self.readers.items():
            view_keys = list(reader.views[0][1])
            with self.lock if name in self.cached else nullcontext():
                table = self._read(name, reader, joined[view_keys].drop_duplicates())
            joined = joined.merge(table, on=view_keys, how="left")
        return joined

    def _read(self, name: str, reader: OnlineReader, wanted: pd.DataFrame) -> pd.DataFrame:
        view_keys = list(wanted.columns)
        table = self.cache.get(name)
        if table is not None:
            seen = wanted.merge(table[view_keys], how="left", indicator=True)
            wanted = seen.loc[seen["_merge"] == "left_only", view_keys]
        if len(wanted):
            found = reader.read(wanted.to_dict("records"))
            found = found.drop(columns=["feature_ts", "stale"])
            table = found if table is None else pd.concat([table, found], ignore_index=True)
        if name in self.cached:
            self.cache[name] = table
        return table


def _python_value(row: dict | None, feature: str):
    """The Python value of one feature in an online-store row (None when absent or unset)."""
    return _proto_value(None if row is None else row.get(feature))


def _proto_value(value):
    """The Python value of a Feast Value proto (None when absent or unset)."""
    if value is None:
        return None
    kind = value.WhichOneof("val")
    return None if kind in (None, "null_val") else getattr(value, kind)


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


SQLITE_KEYS_PER_QUERY = 10_000  # two parameters a key; SQLite allows 32,766 per statement
# Serialized Value protos of one fixed-size field: tag byte (field number << 3 | wire type),
# then the little-endian value. float_val is field 6 (fixed32), double_val field 5 (fixed64).
FIXED_VALUE_PROTOS = ((0x35, 4, "<f4"), (0x29, 8, "<f8"))


def _entity_keys(keys: dict, entity_rows: list[dict]) -> list:
    """Feast's EntityKey proto of every row."""
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.type_map import python_values_to_proto_values

    values = {
        name: python_values_to_proto_values([row[name] for row in entity_rows], kind)
        for name, kind in keys.items()
    }
    return [
        EntityKey(join_keys=list(keys), entity_values=[values[k][i] for k in keys])
        for i in range(len(entity_rows))
    ]


def _serialized_keys(keys: dict, entity_rows: list[dict], version: int) -> list[bytes]:
    """The online store's key of every row: Feast's `serialize_entity_key`, built in bulk when
    every join key is an integer (store, product, customer; 10,000 rows: 114 -> 2.4 ms).

    Version 3 writes the sorted join key names (Feast's `serialize_entity_key_prefix`), then
    per key in that order its type (INT64), length (8) and value, all little-endian.
    """
    from feast.infra.key_encoding_utils import serialize_entity_key, serialize_entity_key_prefix
    from feast.value_type import ValueType

    names = sorted(keys)
    values = [np.array([row[name] for row in entity_rows]) for name in names]
    bulk = (
        version == 3
        and all(keys[name] == ValueType.INT64 for name in names)
        and all(v.dtype == np.int64 and v.ndim == 1 for v in values)  # not empty, all ints
    )
    if not bulk:  # strings (identities), or values Feast converts or refuses itself
        return [
            serialize_entity_key(k, entity_key_serialization_version=version)
            for k in _entity_keys(keys, entity_rows)
        ]
    prefix = np.frombuffer(serialize_entity_key_prefix(names, version), dtype=np.uint8)
    header = np.array([ValueType.INT64.value, 8], dtype="<u4").view(np.uint8)
    parts = [np.broadcast_to(prefix, (len(entity_rows), prefix.size))]
    for value in values:
        parts += [
            np.broadcast_to(header, (len(entity_rows), header.size)),
            value.astype("<i8").reshape(-1, 1).view(np.uint8),
        ]
    data = np.hstack(parts).tobytes()
    width = len(data) // len(entity_rows)
    return [data[i : i + width] for i in range(0, len(data), width)]


def _sqlite_read(
    online_store, config, view, serialized: list[bytes], features: list[str]
) -> tuple[np.ndarray, dict[str, list]]:
    """What Feast's SQLite `online_read` answers, as (stamps, columns) of `_read_view`, in bulk.

    Feast's loop turns every stored value into a datetime and a Value proto in Python; here one
    query per 10,000 keys returns each value with the position of its entity row, and the float
    values, what every numeric feature is stored as, are decoded with numpy; any other value
    goes through its proto as before: most of a 10,000-pair restock batch was that loop.
    The stamp of a row is the oldest of its stored values (Feast's: the last one read; a row is
    written whole, so they agree). Event stamps are read as the UTC epoch seconds they are
    stored as (Feast's converter reads them as local time, an hour or more off outside UTC).
    """
    from feast.infra.online_stores.sqlite import _quote_id, _table_id

    versioned = config.registry.enable_online_feature_view_versioning
    table = _quote_id(_table_id(config.project, view, versioned))
    connection = online_store._get_conn(config)
    found: list[tuple] = []
    for start in range(0, len(serialized), SQLITE_KEYS_PER_QUERY):
        chunk = serialized[start : start + SQLITE_KEYS_PER_QUERY]
        wanted = ",".join(f"({start + i},?)" for i in range(len(chunk)))
        # `+ 0`: the stamp as stored, without the per-value datetime converter of its column.
        found += connection.execute(
            f"WITH wanted(position, entity_key) AS (VALUES {wanted}) "
            f"SELECT wanted.position, stored.feature_name, stored.value, stored.event_ts + 0 "
            f"FROM wanted JOIN {table} AS stored ON stored.entity_key = wanted.entity_key",
            chunk,
        ).fetchall()
    stamps = np.full(len(serialized), np.nan)
    table_values = np.full((len(serialized), len(features)), None, dtype=object)
    if found:
        # Column by column: zip(*found) makes an iterator per row, and the garbage collector
        # then walks the fetched rows again and again (1.4 s for 330,000).
        position = np.fromiter(map(itemgetter(0), found), dtype=np.int64, count=len(found))
        stored_at = np.array(list(map(itemgetter(3), found)), dtype=float)
        np.fmin.at(stamps, position, stored_at)
        index = {feature: j for j, feature in enumerate(features)}
        column = np.fromiter(  # -1: a feature of the view not asked for
            map(index.get, map(itemgetter(1), found), repeat(-1)), dtype=np.int64, count=len(found)
        )
        asked = column >= 0
        values = _decode_values(list(map(itemgetter(2), found)))
        table_values[position[asked], column[asked]] = values[asked]
    return stamps, {feature: table_values[:, j].tolist() for j, feature in enumerate(features)}


def _decode_values(blobs: list[bytes]) -> np.ndarray:
    """The Python values of serialized Value protos, as `_proto_value` gives them."""
    from feast.protos.feast.types.Value_pb2 import Value

    lengths = np.fromiter(map(len, blobs), dtype=np.int64, count=len(blobs))
    data = np.frombuffer(b"".join(blobs), dtype=np.uint8)
    starts = np.cumsum(lengths) - lengths
    tags = np.zeros(len(blobs), dtype=np.uint8)
    tags[lengths > 0] = data[starts[lengths > 0]]
    values = np.full(len(blobs), None, dtype=object)  # an empty blob is an unset value
    decoded = lengths == 0
    for tag, size, dtype in FIXED_VALUE_PROTOS:
        fixed = (tags == tag) & (lengths == size + 1)
        value_bytes = data[starts[fixed, None] + np.arange(1, size + 1)]
        values[fixed] = value_bytes.view(dtype).ravel().astype(float).astype(object)
        decoded |= fixed
    for i in np.flatnonzero(~decoded):
        values[i] = _proto_value(Value.FromString(blobs[i]))
    return values
