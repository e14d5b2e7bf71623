"""The feature layer on both profiles: the embedded default (file registry, SQLite online store)
and production (PostgreSQL SQL registry, Redis online store), same tests, same code.

Production needs the services on 127.0.0.1; without them these tests skip, unless
OMNISHELF_REQUIRE_SERVICES=1 (CI) makes a missing service a failure.
"""

from __future__ import annotations

import dataclasses
import math
import uuid
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from features import synthetic
from features.contract import CUSTOMER_ID, ORDER_ID, PRODUCT_ID, STORE_ID, TS
from features.dataset import load_tables
from features.engineering import EVENT_TIMESTAMP, customer_features
from features.feature_store import (
    OnlineFeatureLookup,
    OnlineReader,
    data_clock,
    historical_features,
    open_store,
    write_offline_tables,
    write_online,
)
from features.identity import IDENTITY_KEY, resolved_tables
from features.repo.definitions import VIEWS
from features.settings import Settings
from pipelines import customers, steps
from tests.integration.conftest import POSTGRES_URL, SMALL, require_services

pytestmark = pytest.mark.integration


def _profile(name: str, home) -> Settings:
    if name == "production":
        require_services()
        # A project of its own keeps parallel runs and the benchmark apart in shared services.
        return Settings(
            home=home,
            online_store="redis",
            registry_url=POSTGRES_URL,
            feast_project=f"test_{uuid.uuid4().hex[:10]}",
        )
    return Settings(home=home)


@pytest.fixture(scope="module", params=["embedded", "production"])
def built(request, tmp_path_factory):
    """A workspace on small synthetic data with features materialised, on one profile."""
    settings = _profile(request.param, tmp_path_factory.mktemp(request.param))
    tables = synthetic.generate(SMALL)
    source = steps.Source("synthetic-small", lambda: tables, "D", "US")
    steps.ingest(settings, source)
    result, summaries = steps.build_features(settings)
    yield {"settings": settings, "source": source, "summaries": summaries}
    if request.param == "production":
        steps.reset_feature_store(settings)


def _until(tables: dict[str, pd.DataFrame], cutoff: pd.Timestamp) -> dict[str, pd.DataFrame]:
    """The same history, cut before `cutoff`."""
    early = dict(tables)
    early["transactions"] = tables["transactions"][tables["transactions"][TS] < cutoff]
    for name in ("inventory", "true_demand", "calendar"):
        early[name] = tables[name][tables[name]["date"] < cutoff]
    early["promotions"] = tables["promotions"][tables["promotions"]["start_date"] < cutoff]
    return early


@pytest.mark.parametrize("profile", ["embedded", "production"])
def test_more_days_load_only_the_new_days_and_another_dataset_rebuilds(profile, tmp_path):
    settings = _profile(profile, tmp_path)
    tables = synthetic.generate(SMALL)
    cutoff = tables["transactions"][TS].max().normalize() - pd.Timedelta(days=14)
    try:
        steps.ingest(settings, steps.Source("shop", lambda: _until(tables, cutoff), "D", "US"))
        _, first = steps.build_features(settings)
        # A decision writes the customer's row online; the next days must still replace it.
        _, decided, _, _ = _two_customers_with_orders(settings)
        customers.set_opt_out(settings, decided, True)
        steps.ingest(settings, steps.Source("shop", lambda: tables, "D", "US"), force=True)
        result, more = steps.build_features(settings)
        assert result.status == "extended"
        for before, after in zip(first[:4], more[:4], strict=True):
            assert after.start == before.end, after.view  # resumed where it ended
            assert 0 < after.rows < before.rows, after.view
        store = open_store(settings)
        latest = _latest_offline(settings, "customer_profile", CUSTOMER_ID)
        assert latest.loc[decided, "opt_out"] == 1
        sample = [decided, *latest.index[:20].tolist()]
        online = OnlineReader(store, "recommender_v1").read([{CUSTOMER_ID: c} for c in sample])
        assert online["orders_91d"].to_numpy() == pytest.approx(
            latest.loc[sample, "orders_91d"].to_numpy(), nan_ok=True
        )
        other = synthetic.generate(dataclasses.replace(SMALL, seed=SMALL.seed + 1))
        steps.ingest(settings, steps.Source("other", lambda: other, "D", "US"))
        result, rebuilt = steps.build_features(settings)
        assert result.status == "built"
        assert rebuilt[0].start < first[0].end and rebuilt[0].rows > more[0].rows
    finally:
        if profile == "production":
            steps.reset_feature_store(settings)


def _latest_offline(settings: Settings, view: str, key: str) -> pd.DataFrame:
    frame = pd.read_parquet(settings.feast_dir / "offline" / f"{view}.parquet")
    frame = frame.sort_values(EVENT_TIMESTAMP).drop_duplicates(key, keep="last")
    return frame.set_index(key)


def test_profile_is_what_the_settings_say(built):
    store = open_store(built["settings"])
    online = store.config.online_store.type
    assert online == ("redis" if built["settings"].online_store == "redis" else "sqlite")
    registry = store.config.registry.registry_type
    assert registry == ("sql" if built["settings"].registry_url else "file")


def test_materialisation_fills_every_view_then_reruns_write_nothing(built):
    first = {s.view: s for s in built["summaries"]}
    assert set(first) == {
        "customer_profile",
        "store_daily",
        "store_product_demand",
        "product_profile",
        "identity_resolution",
    }
    assert all(s.rows > 0 and s.entities > 0 for s in first.values())
    _, again = steps.build_features(built["settings"])
    assert [s.rows for s in again] == [0] * len(again)
    # The registry's history stays in the registry: the next store this process opens starts
    # from scratch (Feast's SQL registry writes it back into the objects it is given).
    assert not any(view.materialization_intervals for view in VIEWS)


def test_online_rows_are_the_latest_offline_rows(built):
    settings = built["settings"]
    store = open_store(settings)
    latest = _latest_offline(settings, "customer_profile", CUSTOMER_ID)
    sample = latest.index[:25].tolist()
    online = OnlineReader(store, "recommender_v1").read(
        [{CUSTOMER_ID: int(c)} for c in sample], data_clock(store, ["customer_profile"])
    )
    online = online.set_index(CUSTOMER_ID)
    for column in ("orders_91d", "net_sales_28d", "days_since_last_order", "opt_out"):
        expected = latest.loc[sample, column].astype(float).to_numpy()
        assert online.loc[sample, column].astype(float).to_numpy() == pytest.approx(
            expected, nan_ok=True
        )
    assert not online["stale"].any()


def test_reads_report_features_older_than_their_ttl_as_stale(built):
    store = open_store(built["settings"])
    clock = data_clock(store, ["store_product_demand"])
    demand = _latest_offline(built["settings"], "store_product_demand", "store_id")
    rows = [
        {"store_id": int(s), "product_id": int(demand.loc[s, "product_id"])} for s in demand.index
    ]
    reader = OnlineReader(store, "demand_v1")
    assert not reader.read(rows, clock)["stale"].any()
    later = reader.read(rows, clock + timedelta(days=15))  # the view's TTL is 14 days
    assert later["stale"].all()
    unknown = reader.read([{"store_id": 999_999, "product_id": 1}], clock)
    assert unknown["feature_ts"].isna().all() and not unknown["stale"].any()


def test_point_in_time_join_never_sees_an_event_at_or_after_the_row_time(built):
    """Move one order from just before a snapshot time T to exactly T: rows at or before T
    change, because they no longer see it; rows after T see it either way."""
    settings = built["settings"]
    tables, _, _ = resolved_tables(settings, ["transactions", "products", "customers"])
    profile = customer_features(tables)
    stamps = profile[EVENT_TIMESTAMP].drop_duplicates().sort_values().tolist()
    boundary = stamps[len(stamps) // 2]
    sales = tables["transactions"]
    before = sales[(sales[TS] < boundary) & (sales[TS] >= boundary - pd.Timedelta(days=1))]
    order = before[ORDER_ID].iloc[0]
    customer = int(before[CUSTOMER_ID].iloc[0])
    moved = sales[TS].where(sales[ORDER_ID] != order, boundary)
    shifted = {**tables, "transactions": sales.assign(**{TS: moved})}

    store = open_store(settings)
    times = [boundary - pd.Timedelta(hours=1), boundary, boundary + pd.Timedelta(days=7)]
    entity = pd.DataFrame({CUSTOMER_ID: customer, EVENT_TIMESTAMP: times})
    joined = {}
    for name, frame in (("original", tables), ("shifted", shifted)):
        write_offline_tables(settings, {"customer_profile": customer_features(frame)})
        joined[name] = historical_features(store, "recommender_v1", entity)
    write_offline_tables(settings, {"customer_profile": profile})

    original, shifted_rows = joined["original"], joined["shifted"]
    # The row at T was stamped T: it covers events before T, so the order moved to T leaves it.
    assert original.loc[1, "orders_7d"] == shifted_rows.loc[1, "orders_7d"] + 1
    # Before T the snapshot in force is the previous one: the same in both.
    assert original.loc[0, "orders_7d"] == shifted_rows.loc[0, "orders_7d"]
    # A week after T both see the order (at T it is still before T + 7 days).
    assert original.loc[2, "orders_28d"] == shifted_rows.loc[2, "orders_28d"]


def _two_customers_with_orders(settings: Settings) -> tuple[str, int, str, int]:
    """An identity of one customer and an identity of another, both with recent orders."""
    tables, identity_map, _ = resolved_tables(settings, ["transactions"])
    latest = _latest_offline(settings, "customer_profile", CUSTOMER_ID)
    active = latest[(latest["orders_91d"] > 0) & (latest["opt_out"] == 0)].index
    single = identity_map.groupby(CUSTOMER_ID)[IDENTITY_KEY].transform("size") == 1
    candidates = identity_map[single & identity_map[CUSTOMER_ID].isin(active)]
    first, second = candidates.iloc[0], candidates.iloc[1]
    return (
        first[IDENTITY_KEY],
        int(first[CUSTOMER_ID]),
        second[IDENTITY_KEY],
        int(second[CUSTOMER_ID]),
    )


def test_merge_reaches_online_features_at_once_and_split_undoes_it(built):
    settings = built["settings"]
    store = open_store(settings)
    key_a, customer_a, key_b, customer_b = _two_customers_with_orders(settings)
    survivor, absorbed = min(customer_a, customer_b), max(customer_a, customer_b)
    identities = OnlineReader(store, "identity_v1")
    profiles = OnlineReader(store, "recommender_v1")
    before = profiles.read([{CUSTOMER_ID: customer_a}, {CUSTOMER_ID: customer_b}])
    expected_orders = before["orders_91d"].sum()

    update = customers.merge(settings, key_a, key_b, reason="same person, confirmed by phone")
    assert update.identities_changed >= 1 and update.customers_changed >= 2
    resolved = identities.read([{IDENTITY_KEY: key_a}, {IDENTITY_KEY: key_b}])
    assert resolved[CUSTOMER_ID].tolist() == [survivor, survivor]
    merged = profiles.read([{CUSTOMER_ID: survivor}, {CUSTOMER_ID: absorbed}])
    assert merged.loc[0, "orders_91d"] == pytest.approx(expected_orders)
    assert merged.loc[1, "opt_out"] == 1 and pd.isna(merged.loc[1, "orders_91d"])
    shown, rules = customers.audit(settings, survivor)
    assert {key_a, key_b} <= set(shown[IDENTITY_KEY])
    assert rules["reason"].str.contains("confirmed by phone").any()

    customers.split(settings, key_b if customer_b == absorbed else key_a, reason="wrong match")
    resolved = identities.read([{IDENTITY_KEY: key_a}, {IDENTITY_KEY: key_b}])
    assert sorted(resolved[CUSTOMER_ID].tolist()) == sorted([customer_a, customer_b])
    after = profiles.read([{CUSTOMER_ID: customer_a}, {CUSTOMER_ID: customer_b}])
    assert after["orders_91d"].tolist() == pytest.approx(before["orders_91d"].tolist())
    assert after["opt_out"].tolist() == [0, 0]


def test_opt_out_counts_at_once_and_opt_in_restores(built):
    settings = built["settings"]
    store = open_store(settings)
    _, customer, _, _ = _two_customers_with_orders(settings)
    profiles = OnlineReader(store, "recommender_v1")
    customers.set_opt_out(settings, customer, True)
    assert profiles.read([{CUSTOMER_ID: customer}])["opt_out"].tolist() == [1]
    resolved, _, _ = resolved_tables(settings, ["customers"])
    assert resolved["customers"].set_index(CUSTOMER_ID).loc[customer, "opt_out"]
    customers.set_opt_out(settings, customer, False)
    assert profiles.read([{CUSTOMER_ID: customer}])["opt_out"].tolist() == [0]


def test_forget_erases_the_customer_online_and_offline_and_keeps_them_out(built):
    settings = built["settings"]
    store = open_store(settings)
    _, customer, _, _ = _two_customers_with_orders(settings)
    _, identity_map, _ = resolved_tables(settings, [])
    theirs = identity_map[identity_map[CUSTOMER_ID] == customer]

    customers.forget(settings, customer)
    profile = OnlineReader(store, "recommender_v1").read([{CUSTOMER_ID: customer}])
    assert profile["opt_out"].tolist() == [1] and profile["orders_91d"].isna().all()
    found = OnlineReader(store, "identity_v1").read(
        [{IDENTITY_KEY: k} for k in theirs[IDENTITY_KEY]]
    )
    assert found[CUSTOMER_ID].isna().all()
    stored = load_tables(settings.tables_dir, ["transactions", "customers", "identities"])
    accounts = set(theirs["source_customer_id"])
    for name, frame in stored.items():
        assert not frame[CUSTOMER_ID].isin(accounts).any(), name
    offline = pd.read_parquet(settings.feast_dir / "offline" / "customer_profile.parquet")
    assert customer not in set(offline[CUSTOMER_ID])
    # A reload of the same source does not bring them back, and training data excludes them.
    steps.ingest(settings, built["source"], force=True)
    tables, _, _ = resolved_tables(settings, ["transactions"])
    assert customer not in set(tables["transactions"][CUSTOMER_ID])
    reloaded = load_tables(settings.tables_dir, ["transactions"])["transactions"]
    assert not reloaded[CUSTOMER_ID].isin(accounts).any()
    # Forgetting twice is harmless.
    assert customers.forget(settings, customer).customers_changed == 0


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    return type(a) is type(b) and a == b


def test_sqlite_reads_answer_what_feasts_online_read_answers(built):
    """The embedded store is read in bulk (one query, numpy decoding); Feast's `online_read`
    must give the same values of the same types, stamps and staleness, for every service, with
    unknown and repeated keys, after the decisions the tests above wrote online."""
    settings = built["settings"]
    if settings.online_store != "sqlite":
        pytest.skip("the bulk read is the SQLite store's")
    store = open_store(settings)
    clock = data_clock(store)

    def offline_keys(view: str) -> list[dict]:
        keys = [column.name for column in store.get_feature_view(view).entity_columns]
        frame = pd.read_parquet(settings.feast_dir / "offline" / f"{view}.parquet", columns=keys)
        return frame.drop_duplicates().to_dict("records")

    demand = offline_keys("store_product_demand")
    cases = [
        ("recommender_v1", {}, offline_keys("customer_profile") + [{CUSTOMER_ID: 10**9}]),
        ("restock_v1", {}, demand + demand[:3] + [{"store_id": 999_999, "product_id": 1}]),
        ("identity_v1", {}, offline_keys("identity_resolution") + [{IDENTITY_KEY: "web:none"}]),
    ] + [
        ("ranker_v1", {"views": [p.name], "full_feature_names": True}, offline_keys(p.name))
        for p in store.get_feature_service("ranker_v1").feature_view_projections
    ]
    for service, options, rows in cases:
        bulk = OnlineReader(store, service, **options)
        assert bulk.sqlite is not None
        feast = OnlineReader(store, service, **options)
        feast.sqlite = None  # Feast's online_read, as on Redis
        expected, found = feast.read_columns(rows, clock), bulk.read_columns(rows, clock)
        assert list(found) == list(expected), service
        for name in ("feature_ts", "stale"):
            assert found[name].dtype == expected[name].dtype
            np.testing.assert_array_equal(found[name], expected[name])  # NaT equals NaT
        for name in set(found) - {"feature_ts", "stale"}:
            assert all(map(_same, found[name], expected[name])), (service, name)
        pd.testing.assert_frame_equal(bulk.read(rows, clock), feast.read(rows, clock))


# Last in the file: it writes a newer product profile online, which the tests above must not see.
def test_kept_product_profiles_are_read_again_once_cleared(built):
    settings = built["settings"]
    store = open_store(settings)
    lookup = OnlineFeatureLookup(store, "ranker_v1", cached=("product_profile", "store_daily"))
    latest = _latest_offline(settings, "product_profile", PRODUCT_ID)
    product = int(latest.index[0])
    customer = int(_latest_offline(settings, "customer_profile", CUSTOMER_ID).index[0])
    keys = pd.DataFrame(
        {CUSTOMER_ID: [customer], PRODUCT_ID: [product], STORE_ID: [1], EVENT_TIMESTAMP: [None]}
    )
    price = lookup(keys)["product_profile__price"].iloc[0]
    newer = latest.loc[[product]].reset_index()
    newer["price"] = price + 100
    newer[EVENT_TIMESTAMP] += timedelta(days=1)  # as a later materialisation writes it
    write_online(store, "product_profile", newer)
    assert lookup(keys)["product_profile__price"].iloc[0] == pytest.approx(price)  # kept
    lookup.clear()
    assert lookup(keys)["product_profile__price"].iloc[0] == pytest.approx(price + 100)
