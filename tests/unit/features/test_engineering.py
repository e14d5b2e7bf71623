"""Feature engineering: the period grid, the dense demand panel, and point-in-time stamps."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from features.contract import conform
from features.engineering import (
    customer_features,
    demand_panel,
    period_grid,
    store_product_features,
)
from features.synthetic import SyntheticConfig, generate

SMALL = SyntheticConfig(n_customers=200, n_stores=3, n_products=40, n_categories=4, days=120)
FUEL = 999


def _tables(lines: list[tuple], opt_out: dict[int, bool] | None = None) -> dict:
    """Canonical tables from (customer, order, product, store, ts, quantity, net_sales) lines."""
    sales = pd.DataFrame(
        lines,
        columns=[
            "customer_id",
            "order_id",
            "product_id",
            "store_id",
            "ts",
            "quantity",
            "net_sales",
        ],
    )
    sales = conform(sales, "transactions", "test")
    products = pd.DataFrame({"product_id": np.sort(sales["product_id"].unique())})
    products["sold_in_units"] = products["product_id"] != FUEL
    customers = pd.DataFrame({"customer_id": np.sort(sales["customer_id"].unique())})
    customers["opt_out"] = customers["customer_id"].map(opt_out or {}).fillna(False)
    return {
        "transactions": sales,
        "products": conform(products, "products", "test"),
        "customers": conform(customers, "customers", "test"),
    }


def _line(product: int, store: int, ts: str, quantity: float, net_sales: float | None = None):
    return (1, 1, product, store, ts, quantity, quantity if net_sales is None else net_sales)


def _stamps(*days: str) -> list[pd.Timestamp]:
    return [pd.Timestamp(day) for day in days]


# ---- period grid ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "first, last, first_week, last_week",
    [
        # Wednesday .. Saturday: from the next Monday to the last week that ends by Saturday.
        ("2024-01-03 10:00", "2024-02-10 18:00", "2024-01-08", "2024-01-29"),
        # Ending on a Sunday completes that week.
        ("2024-01-03 10:00", "2024-02-11 08:00", "2024-01-08", "2024-02-05"),
        # Starting on a Monday (any hour) keeps that week.
        ("2024-01-08 15:00", "2024-01-21 23:59", "2024-01-08", "2024-01-15"),
    ],
)
def test_weekly_grid_runs_from_first_monday_to_last_complete_week(
    first, last, first_week, last_week
):
    grid = period_grid(pd.Series(pd.to_datetime([last, first])), "W")
    assert list(grid) == list(pd.date_range(first_week, last_week, freq="7D"))
    assert (grid.weekday == 0).all()
    assert grid[-1] + pd.Timedelta(days=7) <= pd.Timestamp(last).normalize() + pd.Timedelta(days=1)


def test_weekly_grid_is_empty_without_a_complete_week():
    grid = period_grid(pd.Series(pd.to_datetime(["2024-01-09", "2024-01-14"])), "W")
    assert len(grid) == 0


def test_daily_grid_covers_every_day():
    grid = period_grid(pd.Series(pd.to_datetime(["2024-01-03 10:00", "2024-01-06 01:00"])), "D")
    assert list(grid) == _stamps("2024-01-03", "2024-01-04", "2024-01-05", "2024-01-06")


# ---- demand panel ---------------------------------------------------------------------------

# Four complete weeks (Mondays Jan 1, 8, 15, 22) between a partial Sunday and a partial Monday.
WEEKLY_LINES = [
    _line(100, 1, "2023-12-31 12:00", 50),  # partial week before the grid: ignored
    _line(100, 1, "2024-01-01 09:00", 2, 4.0),
    _line(100, 1, "2024-01-07 20:00", 1, 2.0),
    _line(100, 1, "2024-01-10 09:00", 4, 8.0),
    _line(100, 1, "2024-01-28 23:00", 5, 9.0),
    _line(100, 1, "2024-01-29 08:00", 70),  # partial week after the grid: ignored
    _line(101, 1, "2024-01-02 10:00", 1),  # 1 of 4 weeks: too sparse
    _line(100, 2, "2024-01-03 10:00", 1, 3.0),
    _line(100, 2, "2024-01-12 10:00", 2, 6.0),  # 2 of 4 weeks: exactly the threshold
    *[_line(FUEL, 1, f"2024-01-{day:02d} 10:00", 30) for day in (1, 8, 15, 22)],  # not units
]


def test_demand_panel_is_dense_and_keeps_only_active_unit_series():
    panel = demand_panel(_tables(WEEKLY_LINES), "W", min_active_share=0.5)

    weeks = _stamps("2024-01-01", "2024-01-08", "2024-01-15", "2024-01-22")
    expected = pd.DataFrame(
        {
            "store_id": [1] * 4 + [2] * 4,
            "product_id": [100] * 8,
            "period": weeks * 2,
            "units": [3.0, 4.0, 0.0, 5.0, 1.0, 2.0, 0.0, 0.0],
            "net_sales": [6.0, 8.0, 0.0, 9.0, 3.0, 6.0, 0.0, 0.0],
        }
    )
    pd.testing.assert_frame_equal(panel, expected, check_dtype=False)


def test_demand_panel_threshold_moves_series_in_and_out():
    tables = _tables(WEEKLY_LINES)
    loose = demand_panel(tables, "W", min_active_share=0.25)
    series = loose[["store_id", "product_id"]].drop_duplicates().apply(tuple, axis=1).tolist()
    assert series == [(1, 100), (1, 101), (2, 100)]
    assert loose.loc[loose["product_id"] == 101, "units"].tolist() == [1.0, 0.0, 0.0, 0.0]

    strict = demand_panel(tables, "W", min_active_share=0.6)
    assert strict[["store_id", "product_id"]].drop_duplicates().values.tolist() == [[1, 100]]

    with pytest.raises(ValueError, match="no store x product series sold in 80%"):
        demand_panel(tables, "W", min_active_share=0.8)


def test_demand_panel_of_synthetic_data_has_every_period_for_every_series():
    tables = generate(SMALL)
    panel = demand_panel(tables, "D", min_active_share=0.5)
    grid = period_grid(tables["transactions"]["ts"], "D")
    per_series = panel.groupby(["store_id", "product_id"])["period"].agg(["size", "nunique"])
    assert (per_series["size"] == len(grid)).all()
    assert (per_series["nunique"] == len(grid)).all()
    assert (panel["units"] == 0).any()  # zeros are rows, not gaps
    active_share = panel.assign(sold=panel["units"] > 0).groupby(["store_id", "product_id"])["sold"]
    assert (active_share.mean() >= 0.5).all()
    # Units add up to the sales of those series.
    sales = tables["transactions"].merge(per_series.reset_index()[["store_id", "product_id"]])
    assert panel["units"].sum() == pytest.approx(sales["quantity"].sum())


# ---- store x product features ---------------------------------------------------------------

DAYS = pd.date_range("2024-03-04", periods=14, freq="D")
UNITS_100 = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 0]


def _daily_features() -> pd.DataFrame:
    lines = []
    for day, units in zip(DAYS, UNITS_100, strict=True):
        if units:
            price = 3.0 if day == DAYS[12] else 2.0
            lines.append(_line(100, 1, f"{day:%Y-%m-%d} 12:00", units, units * price))
        lines.append(_line(101, 1, f"{day:%Y-%m-%d} 12:00", 1))  # keeps the grid 14 days long
    panel = demand_panel(_tables(lines), "D")
    features = store_product_features(panel, "D")
    return features[features["product_id"] == 100].set_index("event_timestamp")


def test_daily_features_are_stamped_at_each_period_end_with_hand_computed_values():
    f = _daily_features()
    assert list(f.index) == list(DAYS + pd.Timedelta(days=1))

    def at(stamp: str, column: str) -> float:
        return float(f.loc[pd.Timestamp(stamp), column])

    # Stamp 03-08 is the end of day 03-07 (units 4): lag 1 is that day, lag 2 the day before.
    assert at("2024-03-08", "units_lag_1") == 4
    assert at("2024-03-08", "units_lag_2") == 3
    assert at("2024-03-08", "units_lag_4") == 1
    assert math.isnan(at("2024-03-08", "units_lag_7"))
    assert at("2024-03-11", "units_lag_7") == 1
    assert math.isnan(at("2024-03-07", "units_mean_4"))
    assert at("2024-03-08", "units_mean_4") == pytest.approx((1 + 2 + 3 + 4) / 4)
    assert at("2024-03-09", "units_mean_4") == pytest.approx((2 + 3 + 4 + 5) / 4)
    assert math.isnan(at("2024-03-16", "units_mean_13"))
    # Days 1..13: mean 7, population variance (13**2 - 1) / 12 = 14.
    assert at("2024-03-17", "units_mean_13") == pytest.approx(7.0)
    assert at("2024-03-17", "units_std_13") == pytest.approx(math.sqrt(14), rel=1e-5)
    assert at("2024-03-17", "units_nonzero_13") == pytest.approx(1.0)
    # Days 2..13 and a zero: sum 90, sum of squares 818.
    assert at("2024-03-18", "units_mean_13") == pytest.approx(90 / 13)
    assert at("2024-03-18", "units_std_13") == pytest.approx(
        math.sqrt(818 / 13 - (90 / 13) ** 2), rel=1e-5
    )
    assert at("2024-03-18", "units_nonzero_13") == pytest.approx(12 / 13)
    assert at("2024-03-05", "price_last") == 2.0
    assert at("2024-03-17", "price_last") == 3.0
    assert at("2024-03-18", "price_last") == 3.0  # no sale that day: the last price carries


# Weekly, one series: weeks of Jan 1, 8, 15 and 22; T = 2024-01-15 ends the week of Jan 8.
T = pd.Timestamp("2024-01-15")
WEEK = pd.Timedelta(days=7)


def _weekly_features(extra: list[tuple]) -> pd.DataFrame:
    lines = [
        _line(100, 1, "2024-01-01 09:00", 1),
        _line(100, 1, "2024-01-09 09:00", 2),
        _line(100, 1, "2024-01-16 09:00", 3),
        _line(100, 1, "2024-01-23 09:00", 4),
        _line(100, 1, "2024-01-28 23:00", 0),  # fixes the end of the data
        *extra,
    ]
    panel = demand_panel(_tables(lines), "W")
    return store_product_features(panel, "W").set_index("event_timestamp")


def test_weekly_lag_at_stamp_t_is_the_week_that_ends_at_t():
    f = _weekly_features([])
    assert list(f.index) == [T - WEEK, T, T + WEEK, T + 2 * WEEK]
    assert f["units_lag_1"].tolist() == [1, 2, 3, 4]
    assert f.loc[T, "units_lag_2"] == 1


def test_a_sale_just_before_t_is_seen_at_t_and_one_at_t_is_not():
    before = _weekly_features([_line(100, 1, "2024-01-14 23:59", 5)])
    at_t = _weekly_features([_line(100, 1, "2024-01-15 00:00", 5)])
    after = _weekly_features([_line(100, 1, "2024-01-15 00:01", 5)])

    assert before.loc[T, "units_lag_1"] == 2 + 5
    assert before.loc[T + WEEK, "units_lag_1"] == 3
    for moved in (at_t, after):
        assert moved.loc[T, "units_lag_1"] == 2
        assert moved.loc[T + WEEK, "units_lag_1"] == 3 + 5
        assert moved.loc[T + WEEK, "units_lag_2"] == 2
    pd.testing.assert_frame_equal(at_t, after)
    pd.testing.assert_frame_equal(before.loc[: T - WEEK], after.loc[: T - WEEK])


def test_nothing_after_t_changes_a_row_stamped_t_or_earlier():
    base = _weekly_features([_line(100, 1, "2024-01-15 00:01", 5)])
    same_week = _weekly_features([_line(100, 1, "2024-01-21 18:00", 5)])
    next_week = _weekly_features([_line(100, 1, "2024-01-27 18:00", 5)])
    more = _weekly_features([_line(100, 1, "2024-01-15 00:01", 5), _line(100, 1, "2024-01-20", 9)])

    for other in (same_week, next_week, more):
        pd.testing.assert_frame_equal(base.loc[:T], other.loc[:T])
    pd.testing.assert_frame_equal(base, same_week)
    assert base.loc[T + WEEK, "units_lag_1"] == 3 + 5
    assert next_week.loc[T + WEEK, "units_lag_1"] == 3
    assert next_week.loc[T + 2 * WEEK, "units_lag_1"] == 4 + 5
    assert more.loc[T + WEEK, "units_lag_1"] == 3 + 5 + 9


# ---- customer features ----------------------------------------------------------------------


def _order(customer: int, order: int, ts: str, net_sales: float) -> tuple:
    return (customer, order, 100, 1, ts, 1, net_sales)


CUSTOMER_LINES = [
    # customer 1: days 0 (two lines, one order), 3, 10 and 30 of the data
    _order(1, 1, "2024-01-01 08:00", 3.0),
    _order(1, 1, "2024-01-01 08:00", 2.0),
    _order(1, 2, "2024-01-04 23:30", 4.0),
    _order(1, 3, "2024-01-11 10:00", 1.0),
    _order(1, 4, "2024-01-31 10:00", 10.0),
    # customer 2: days 9, 20 and 34
    _order(2, 5, "2024-01-10 10:00", 7.0),
    _order(2, 6, "2024-01-21 10:00", 8.0),
    _order(2, 7, "2024-02-04 10:00", 9.0),
    # customer 3: first order exactly at the first snapshot's stamp
    _order(3, 8, "2024-01-08 00:00", 5.0),
]
COLUMNS = ["orders_28d", "orders_91d", "net_sales_91d", "days_since_last_order", "opt_out"]


def test_customer_snapshots_are_hand_computed_and_start_after_the_first_order():
    features = customer_features(_tables(CUSTOMER_LINES, opt_out={2: True}))
    got = {
        (int(row.customer_id), row.event_timestamp.strftime("%m-%d")): [
            float(row[c]) for c in COLUMNS
        ]
        for _, row in features.iterrows()
    }
    # Snapshots at the end of days 6, 13, 20, 27 and 34, stamped the next midnight.
    assert got == {
        (1, "01-08"): [2, 2, 9, 7 - 3, 0],
        (1, "01-15"): [3, 3, 10, 14 - 10, 0],
        (1, "01-22"): [3, 3, 10, 21 - 10, 0],
        (1, "01-29"): [3, 3, 10, 28 - 10, 0],
        (1, "02-05"): [2, 4, 20, 35 - 30, 0],  # the 28 days hold days 10 and 30 only
        (2, "01-15"): [1, 1, 7, 14 - 9, 1],
        (2, "01-22"): [2, 2, 15, 21 - 20, 1],
        (2, "01-29"): [2, 2, 15, 28 - 20, 1],
        (2, "02-05"): [3, 3, 24, 35 - 34, 1],
        (3, "01-15"): [1, 1, 5, 14 - 7, 0],
        (3, "01-22"): [1, 1, 5, 21 - 7, 0],
        (3, "01-29"): [1, 1, 5, 28 - 7, 0],
        (3, "02-05"): [1, 1, 5, 35 - 7, 0],
    }


def test_customer_snapshot_before_first_order_is_absent():
    features = customer_features(_tables(CUSTOMER_LINES))
    first_stamp = features.groupby("customer_id")["event_timestamp"].min()
    first_order = _tables(CUSTOMER_LINES)["transactions"].groupby("customer_id")["ts"].min()
    assert (first_stamp > first_order).all()
    assert first_stamp[2] == pd.Timestamp("2024-01-15")  # not 01-08: no order before it
    assert first_stamp[3] == pd.Timestamp("2024-01-15")  # an order at 01-08 00:00 is not before
    assert features["days_since_last_order"].notna().all()
