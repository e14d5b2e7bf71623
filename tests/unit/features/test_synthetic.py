"""The synthetic generator: contract, determinism, and that its demand signals are measurable."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.contract import CHANNELS, TABLES, check_references, conform
from features.identity import resolve
from features.synthetic import FIRST_PRODUCT_ID, SyntheticConfig, generate

SMALL = SyntheticConfig(n_customers=200, n_stores=4, n_products=60, days=120)
CELL = ["store_id", "product_id", "date"]


@pytest.fixture(scope="module")
def tables() -> dict[str, pd.DataFrame]:
    return generate(SMALL)


@pytest.fixture(scope="module")
def cells(tables) -> pd.DataFrame:
    """True demand, on-hand, sales and promotion flag per store x product x day."""
    sales = tables["transactions"].assign(date=lambda t: t["ts"].dt.normalize())
    sales = sales.groupby(CELL)["quantity"].sum().rename("sales").reset_index()
    frame = tables["true_demand"].merge(tables["inventory"], on=CELL, how="left", validate="1:1")
    frame = frame.merge(sales, on=CELL, how="left", validate="1:1").fillna({"sales": 0.0})
    promo = _promotion_days(tables["promotions"]).assign(promo=True)
    frame = frame.merge(promo[CELL + ["promo"]], on=CELL, how="left", validate="1:1")
    return frame.assign(promo=frame["promo"].notna())


def _promotion_days(promotions: pd.DataFrame) -> pd.DataFrame:
    length = (promotions["end_date"] - promotions["start_date"]).dt.days.to_numpy() + 1
    rows = promotions.loc[promotions.index.repeat(length)].reset_index(drop=True)
    step = np.arange(len(rows)) - np.repeat(np.cumsum(length) - length, length)
    return rows.assign(date=rows["start_date"] + pd.to_timedelta(step, unit="D"))


def _weekday_profile(frame: pd.DataFrame) -> np.ndarray:
    daily = frame.groupby("date")["demand"].sum()
    profile = daily.groupby(daily.index.dayofweek).mean().to_numpy()
    return profile / profile.mean()


def test_every_table_is_canonical_and_references_resolve(tables):
    assert set(tables) == set(TABLES)
    for name, frame in tables.items():
        assert list(frame.columns) == TABLES[name].column_names, name
        assert len(frame) > 0, name
        pd.testing.assert_frame_equal(frame, conform(frame, name, source="test"), obj=name)
    check_references(tables)


def test_same_seed_gives_identical_tables_and_another_seed_differs(tables):
    again = generate(SMALL)
    for name in tables:
        pd.testing.assert_frame_equal(tables[name], again[name], obj=name)
    other = generate(SyntheticConfig(n_customers=200, n_stores=4, n_products=60, days=120, seed=8))
    assert not tables["transactions"].equals(other["transactions"])
    assert not tables["true_demand"].equals(other["true_demand"])


def test_dimension_tables(tables):
    products, stores, customers = tables["products"], tables["stores"], tables["customers"]
    assert products["product_id"].tolist() == list(range(FIRST_PRODUCT_ID, FIRST_PRODUCT_ID + 60))
    assert products["category"].str.fullmatch(r"cat_\d\d").all()
    assert products["category"].nunique() == SMALL.n_categories
    assert (products["price"] > 0).all() and products["sold_in_units"].all()
    assert stores["store_id"].tolist() == [1, 2, 3, 4]
    assert stores["lead_time_days"].between(1, 4).all()
    # One row per channel account: persons keep their number, extra channels get new ones.
    assert customers["customer_id"].tolist() == list(range(1, len(tables["identities"]) + 1))
    assert customers["home_store_id"].isin(stores["store_id"]).all()
    big = generate(SyntheticConfig(n_customers=3000, n_stores=2, n_products=20, days=14))
    assert 0.015 < big["customers"]["opt_out"].mean() < 0.05


def test_calendar_has_every_day_holidays_and_events():
    config = SyntheticConfig(n_customers=50, n_stores=2, n_products=20, start="2024-11-20", days=20)
    calendar = generate(config)["calendar"].set_index("date")
    assert calendar.index.equals(pd.date_range("2024-11-20", periods=20, freq="D"))
    assert calendar.loc["2024-11-28", "holiday_name"] == "Thanksgiving Day"
    assert calendar.loc["2024-11-29", "event"] == "Black Friday"
    assert calendar.loc["2024-12-02", "event"] == "Cyber Monday"
    assert calendar["is_holiday"].sum() == 1
    assert (calendar["is_holiday"] == (calendar["holiday_name"] != "")).all()


def test_holiday_windows_lift_demand(tables, cells):
    holiday = tables["calendar"].loc[tables["calendar"]["is_holiday"], "date"]
    window = pd.DatetimeIndex(
        np.concatenate([holiday - pd.Timedelta(days=lag) for lag in range(3)])
    )
    daily = cells.groupby("date")["demand"].sum()
    in_window = daily.index.isin(window)
    assert in_window.sum() >= 5
    assert daily[in_window].mean() > 1.2 * daily[~in_window].mean()


def test_sales_are_true_demand_censored_by_stock(cells):
    assert (cells["sales"] <= cells["demand"]).all()
    np.testing.assert_array_equal(cells["sales"], np.minimum(cells["demand"], cells["on_hand"]))
    assert (cells.loc[cells["on_hand"] == 0, "sales"] == 0).all()
    lost = cells["sales"] < cells["demand"]
    assert lost.sum() > 20
    assert (cells.loc[lost, "on_hand"] < cells.loc[lost, "demand"]).all()


def test_every_series_with_demand_has_every_day(tables, cells):
    demand, inventory = tables["true_demand"], tables["inventory"]
    assert demand.groupby(["store_id", "product_id"]).size().eq(SMALL.days).all()
    assert (demand.groupby(["store_id", "product_id"])["demand"].sum() > 0).all()
    assert len(inventory) == len(demand) and cells["on_hand"].notna().all()
    assert (demand["demand"] == 0).mean() > 0.3  # zeros are kept
    sold = tables["transactions"].assign(date=lambda t: t["ts"].dt.normalize())[CELL]
    assert len(sold.merge(demand, on=CELL)) == len(sold)


def test_stockout_share_is_plausible(cells):
    share = (cells["on_hand"] == 0).mean()
    assert 0.03 < share < 0.2
    by_series = cells.groupby(["store_id", "product_id"])["on_hand"].apply(lambda s: (s == 0).any())
    assert 0.1 < by_series.mean() < 1.0  # not one broken series, not every series


def test_promotions_lift_true_demand(cells):
    means = cells.groupby(["store_id", "product_id", "promo"])["demand"].mean().unstack()
    means = means.dropna()
    means = means[means[False] > 0]
    assert len(means) >= 30
    lift = means[True] / means[False]
    assert lift.median() > 1.3
    assert (lift > 1).mean() > 0.65


def test_promotions_are_priced_and_do_not_overlap(tables):
    promotions, products = tables["promotions"], tables["products"]
    assert promotions["promo_type"].isin(SMALL.promo_types).all()
    length = (promotions["end_date"] - promotions["start_date"]).dt.days + 1
    last = promotions["end_date"] == pd.Timestamp(SMALL.start) + pd.Timedelta(days=SMALL.days - 1)
    assert (length.between(*SMALL.promo_days) | (last & (length >= 1))).all()
    days = _promotion_days(promotions)
    assert not days.duplicated(CELL).any()
    list_price = promotions["product_id"].map(products.set_index("product_id")["price"])
    assert (promotions["price"] <= list_price).all()
    cuts = promotions["promo_type"] == "price_cut"
    assert (promotions.loc[cuts, "price"] < 0.9 * list_price[cuts]).all()


def test_net_sales_and_discount_follow_the_price_paid(tables):
    lines = tables["transactions"].assign(date=lambda t: t["ts"].dt.normalize())
    promo = _promotion_days(tables["promotions"]).rename(columns={"price": "promo_price"})
    lines = lines.merge(promo[CELL + ["promo_price"]], on=CELL, how="left", validate="m:1")
    list_price = lines["product_id"].map(tables["products"].set_index("product_id")["price"])
    paid = lines["promo_price"].fillna(list_price)
    np.testing.assert_allclose(lines["net_sales"], lines["quantity"] * paid, atol=0.006)
    np.testing.assert_allclose(
        lines["discount"], lines["quantity"] * (list_price - paid), atol=0.006
    )
    on_promo = lines["promo_price"].notna()
    assert on_promo.any() and (lines.loc[on_promo, "discount"] > 0).any()
    assert (lines.loc[~on_promo, "discount"] == 0).all()


def test_weekday_profile_follows_the_configured_factors():
    flat_calendar = dict(
        n_customers=300, n_stores=3, n_products=60, days=182, holiday_uplift=1.0, event_uplift=1.0
    )
    configured = SyntheticConfig(**flat_calendar)
    profile = _weekday_profile(generate(configured)["true_demand"])
    expected = np.asarray(configured.weekday_factors) / np.mean(configured.weekday_factors)
    np.testing.assert_allclose(profile, expected, atol=0.08)
    assert profile[5:].mean() > 1.15 * profile[:5].mean()
    flat = _weekday_profile(
        generate(SyntheticConfig(**flat_calendar, weekday_factors=(1.0,) * 7))["true_demand"]
    )
    np.testing.assert_allclose(flat, 1.0, atol=0.06)


def test_each_channel_account_is_one_identity_and_keys_reunite_persons(tables):
    identities = tables["identities"]
    assert identities["channel"].isin(CHANNELS).all()
    assert identities["channel_customer_id"].is_unique
    assert identities["customer_id"].is_unique
    assert identities["customer_id"].isin(tables["customers"]["customer_id"]).all()
    used = tables["transactions"][["customer_id", "channel"]].drop_duplicates()
    assert len(used.merge(identities, on=["customer_id", "channel"])) == len(used)
    assert set(used["channel"]) == set(CHANNELS)
    # Persons keep accounts 1..n: resolution joins some of their other channels to them, and
    # never two persons together (their keys are distinct).
    resolved = resolve(identities)
    primary = resolved["source_customer_id"] <= SMALL.n_customers
    assert (
        resolved.loc[primary, "customer_id"] == resolved.loc[primary, "source_customer_id"]
    ).all()
    joined = (resolved.loc[~primary, "customer_id"] <= SMALL.n_customers).mean()
    assert 0.4 < joined < 0.95


def test_orders_are_one_customer_channel_store_and_time(tables):
    lines = tables["transactions"]
    per_order = lines.groupby("order_id")[["customer_id", "channel", "store_id", "ts"]].nunique()
    assert (per_order == 1).all().all()
    assert not lines.duplicated(["order_id", "product_id"]).any()
    home = lines["customer_id"].map(tables["customers"].set_index("customer_id")["home_store_id"])
    assert (lines["store_id"] == home).all()
    assert (lines["quantity"] >= 1).all() and (lines["quantity"] % 1 == 0).all()
    hour = lines["ts"].dt.hour
    assert hour[lines["channel"] == "store"].between(7, 21).all()
    assert (hour[lines["channel"] != "store"] >= 20).mean() > 0.15  # online evenings
    assert lines["ts"].dt.normalize().nunique() == SMALL.days


def test_repeat_purchases_are_frequent_and_regular(tables):
    lines = tables["transactions"].assign(day=lambda t: t["ts"].dt.normalize())
    bought = lines.drop_duplicates(["customer_id", "product_id", "day"]).sort_values("day")
    pair = ["customer_id", "product_id"]
    assert (bought.groupby(pair).size() >= 3).mean() > 0.3
    gaps = bought.assign(gap=bought.groupby(pair)["day"].diff().dt.days).dropna()
    gaps = gaps[gaps.groupby(pair)["gap"].transform("size") >= 3]
    typical = gaps.groupby(pair)["gap"].transform("median")
    deviation = ((gaps["gap"] - typical).abs() / typical).groupby([gaps[c] for c in pair]).median()
    assert len(deviation) > 100
    assert deviation.median() < 0.2  # a Poisson shopper would be near 0.5


@pytest.mark.parametrize(
    "change",
    [
        {"events": ("Boxing Week",)},
        {"weekday_factors": (1.0,) * 6},
        {"promo_types": ("bogof",)},
        {"n_products": 5, "n_categories": 12},
    ],
)
def test_bad_config_is_refused(change):
    with pytest.raises(ValueError):
        SyntheticConfig(**change)
