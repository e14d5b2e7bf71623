"""Feature engineering: the period grid, the dense demand panel, the feature tables (store x
product, customer, store, product) with hand-computed values, and point-in-time stamps."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest

from features.contract import conform
from features.engineering import (
    customer_features,
    demand_panel,
    period_grid,
    product_features,
    store_features,
    store_product_features,
)
from features.synthetic import SyntheticConfig, generate

SMALL = SyntheticConfig(n_customers=200, n_stores=3, n_products=40, n_categories=4, days=120)
FUEL = 999
LINE_COLUMNS = [
    "customer_id",
    "order_id",
    "product_id",
    "store_id",
    "ts",
    "quantity",
    "net_sales",
    "channel",
    "discount",
]


def _tables(
    lines: list[tuple],
    opt_out: dict[int, bool] | None = None,
    categories: dict[int, str] | None = None,
    list_prices: dict[int, float] | None = None,
    **optional: pd.DataFrame,
) -> dict:
    """Canonical tables from (customer, order, product, store, ts, quantity, net_sales[, channel
    [, discount]]) lines, plus optional tables (promotions, inventory) by name."""
    sales = pd.DataFrame(lines, columns=LINE_COLUMNS[: len(lines[0])])
    sales = conform(sales, "transactions", "test")
    products = pd.DataFrame({"product_id": np.sort(sales["product_id"].unique())})
    products["sold_in_units"] = products["product_id"] != FUEL
    if categories:
        products["category"] = products["product_id"].map(categories)
    if list_prices:
        products["price"] = products["product_id"].map(list_prices)
    customers = pd.DataFrame({"customer_id": np.sort(sales["customer_id"].unique())})
    customers["opt_out"] = customers["customer_id"].map(opt_out or {}).fillna(False)
    tables = {
        "transactions": sales,
        "products": conform(products, "products", "test"),
        "customers": conform(customers, "customers", "test"),
    }
    return tables | {name: conform(frame, name, "test") for name, frame in optional.items()}


def _line(product: int, store: int, ts: str, quantity: float, net_sales: float | None = None):
    return (1, 1, product, store, ts, quantity, quantity if net_sales is None else net_sales)


def _stamps(*days: str) -> list[pd.Timestamp]:
    return [pd.Timestamp(day) for day in days]


def _day(day: int, time: str = "10:00") -> str:
    """Day `day` of data that starts on Monday 2024-01-01."""
    return f"{pd.Timestamp('2024-01-01') + pd.Timedelta(days=day):%Y-%m-%d} {time}"


def _by_stamp(frame: pd.DataFrame, key: str, entity: int) -> pd.DataFrame:
    return frame[frame[key] == entity].set_index("event_timestamp")


def _values(row: pd.Series, columns: list[str]) -> list:
    """Row values as floats (None for NaN), for exact comparison with hand-computed lists."""
    return [None if pd.isna(row[c]) else pytest.approx(float(row[c]), rel=1e-5) for c in columns]


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
    # On a daily grid a window of 7 days is 7 periods; 14 days hold no 28-day window.
    assert math.isnan(at("2024-03-10", "units_mean_7d"))
    assert at("2024-03-11", "units_mean_7d") == pytest.approx((1 + 2 + 3 + 4 + 5 + 6 + 7) / 7)
    assert at("2024-03-12", "units_mean_7d") == pytest.approx((2 + 3 + 4 + 5 + 6 + 7 + 8) / 7)
    for column in ("units_mean_28d", "units_std_28d", "units_mean_91d", "units_nonzero_91d"):
        assert f[column].isna().all()
    assert at("2024-03-05", "price_last") == 2.0
    assert at("2024-03-17", "price_last") == 3.0
    assert at("2024-03-18", "price_last") == 3.0  # no sale that day: the last price carries
    # Without promotions or inventory: never on promotion, stock unknown.
    assert (f["promo_share_28d"] == 0).all() and (f["on_promo_last"] == 0).all()
    assert f["on_hand_last"].isna().all() and f["days_of_cover"].isna().all()


def test_weekly_windows_in_days_cover_whole_weeks():
    # The same 14 numbers, one per week (Mondays from Jan 1); product 101 sells every Sunday.
    lines = []
    for week, units in enumerate(UNITS_100):
        monday = pd.Timestamp("2024-01-01") + pd.Timedelta(weeks=week)
        if units:
            lines.append(_line(100, 1, f"{monday:%Y-%m-%d} 12:00", units))
        lines.append(_line(101, 1, f"{monday + pd.Timedelta(days=6):%Y-%m-%d} 12:00", 1))
    f = store_product_features(demand_panel(_tables(lines), "W"), "W")
    f = _by_stamp(f, "product_id", 100)

    def at(stamp: str, column: str) -> float:
        return float(f.loc[pd.Timestamp(stamp), column])

    # Weeks 1..n end at Jan 8, 15, ...: 7 days = 1 week, 28 days = 4, 91 days = 13.
    assert f["units_mean_7d"].tolist() == f["units_lag_1"].tolist()
    assert math.isnan(at("2024-01-22", "units_mean_28d"))
    assert at("2024-01-29", "units_mean_28d") == pytest.approx((1 + 2 + 3 + 4) / 4)
    assert at("2024-01-29", "units_std_28d") == pytest.approx(math.sqrt(1.25), rel=1e-5)
    assert math.isnan(at("2024-03-25", "units_mean_91d"))
    # Weeks 1..13: mean 7, population variance (13**2 - 1) / 12 = 14.
    assert at("2024-04-01", "units_mean_91d") == pytest.approx(7.0)
    assert at("2024-04-01", "units_std_91d") == pytest.approx(math.sqrt(14), rel=1e-5)
    assert at("2024-04-01", "units_nonzero_91d") == pytest.approx(1.0)
    # Weeks 2..13 and a zero: sum 90, sum of squares 818.
    assert at("2024-04-08", "units_mean_91d") == pytest.approx(90 / 13)
    assert at("2024-04-08", "units_std_91d") == pytest.approx(
        math.sqrt(818 / 13 - (90 / 13) ** 2), rel=1e-5
    )
    assert at("2024-04-08", "units_nonzero_91d") == pytest.approx(12 / 13)
    assert at("2024-04-08", "units_mean_28d") == pytest.approx((11 + 12 + 13 + 0) / 4)


# Eight weeks (Mondays Jan 1 .. Feb 19) of store 1 x product 100 selling 7, 14, 7 and then nothing.
STOCK_LINES = [
    _line(100, 1, "2024-01-01 09:00", 7),
    _line(100, 1, "2024-01-09 09:00", 14),
    _line(100, 1, "2024-01-16 09:00", 7),
    _line(100, 1, "2024-02-25 23:00", 0),  # fixes the end of the data
]
STOCK_STAMPS = list(pd.date_range("2024-01-08", periods=8, freq="7D"))


def _promotion(store: int, product: int, start: str, end: str) -> tuple:
    return (store, product, start, end, "display")


PROMOTIONS = pd.DataFrame(
    [
        _promotion(1, 100, "2023-12-20", "2023-12-31"),  # before the grid, inside the first window
        _promotion(1, 100, "2024-01-05", "2024-01-07"),
        _promotion(1, 100, "2024-01-06", "2024-01-10"),  # overlaps: Jan 5..10 count once
        _promotion(1, 100, "2024-01-21", "2024-01-21"),  # one day: the end date is inclusive
        _promotion(2, 100, "2024-01-01", "2024-02-25"),  # another store
        _promotion(1, 555, "2024-01-01", "2024-02-25"),  # another product
    ],
    columns=["store_id", "product_id", "start_date", "end_date", "promo_type"],
)
INVENTORY = pd.DataFrame(
    [
        (1, 100, "2024-01-07", 5.0),  # Sundays: the start of each week's last day
        (1, 100, "2024-01-10", 99.0),  # a Wednesday: not the last day of a week
        (1, 100, "2024-01-28", 3.0),
        (1, 100, "2024-02-04", 0.0),
        (1, 100, "2024-02-11", 2.0),
        (1, 100, "2024-02-25", 4.0),
        (2, 100, "2024-01-28", 50.0),  # another store
    ],
    columns=["store_id", "product_id", "date", "on_hand"],
)


def _stock_features(**optional: pd.DataFrame) -> pd.DataFrame:
    tables = _tables(STOCK_LINES, **optional)
    panel = demand_panel(tables, "W", min_active_share=0.25)
    return store_product_features(panel, "W", tables).set_index("event_timestamp")


def test_promotion_share_counts_promoted_days_of_the_28_before_the_stamp():
    f = _stock_features(promotions=PROMOTIONS)
    assert list(f.index) == STOCK_STAMPS
    # Jan 8 sees Dec 11..Jan 7: Dec 20..31 and Jan 5..7. Jan 15 adds Jan 8..10, Jan 22 drops
    # Dec 18..24 and adds Jan 21; Jan 29 sees only Jan 5..10 and Jan 21; and so on.
    assert f["promo_share_28d"].tolist() == pytest.approx(
        [15 / 28, 18 / 28, 14 / 28, 7 / 28, 4 / 28, 1 / 28, 0.0, 0.0]
    )
    # The last days are the Sundays Jan 7, 14, 21, 28, ...
    assert f["on_promo_last"].tolist() == [1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0]


def test_on_hand_is_the_snapshot_of_the_last_day_and_cover_uses_the_28_day_rate():
    f = _stock_features(inventory=INVENTORY)
    on_hand = [5.0, None, None, 3.0, 0.0, 2.0, None, 4.0]
    assert [None if math.isnan(v) else v for v in f["on_hand_last"]] == on_hand
    # Weekly means over 4 weeks: -, -, -, 28/4, 21/4, 7/4, 0, 0 units, a seventh of that per day.
    assert f["units_mean_28d"].tolist()[3:] == pytest.approx([7.0, 5.25, 1.75, 0.0, 0.0])
    cover = [None, None, None, 3 / 1.0, 0 / 0.75, 2 / 0.25, None, None]  # 0 sold: no cover
    assert [None if math.isnan(v) else v for v in f["days_of_cover"]] == [
        c if c is None else pytest.approx(c) for c in cover
    ]
    assert (f["promo_share_28d"] == 0).all()  # no promotions table


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


def _order(customer: int, order: int, ts: str, net_sales: float, product: int = 100) -> tuple:
    return (customer, order, product, 1, ts, 1, net_sales)


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
COLUMNS = [
    "orders_7d",
    "orders_28d",
    "orders_91d",
    "net_sales_7d",
    "net_sales_91d",
    "days_since_last_order",
    "opt_out",
]


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
        (1, "01-08"): [2, 2, 2, 9, 9, 7 - 3, 0],
        (1, "01-15"): [1, 3, 3, 1, 10, 14 - 10, 0],
        (1, "01-22"): [0, 3, 3, 0, 10, 21 - 10, 0],
        (1, "01-29"): [0, 3, 3, 0, 10, 28 - 10, 0],
        (1, "02-05"): [1, 2, 4, 10, 20, 35 - 30, 0],  # the 28 days hold days 10 and 30 only
        (2, "01-15"): [1, 1, 1, 7, 7, 14 - 9, 1],
        (2, "01-22"): [1, 2, 2, 8, 15, 21 - 20, 1],
        (2, "01-29"): [0, 2, 2, 0, 15, 28 - 20, 1],
        (2, "02-05"): [1, 3, 3, 9, 24, 35 - 34, 1],
        (3, "01-15"): [1, 1, 1, 5, 5, 14 - 7, 0],
        (3, "01-22"): [0, 1, 1, 0, 5, 21 - 7, 0],
        (3, "01-29"): [0, 1, 1, 0, 5, 28 - 7, 0],
        (3, "02-05"): [0, 1, 1, 0, 5, 35 - 7, 0],
    }
    assert features["opt_out"].dtype == "int64"
    assert (
        features.drop(
            columns=["customer_id", "event_timestamp", "top_categories", "opt_out"]
        ).dtypes
        == "float32"
    ).all()


def test_customer_snapshot_before_first_order_is_absent():
    features = customer_features(_tables(CUSTOMER_LINES))
    first_stamp = features.groupby("customer_id")["event_timestamp"].min()
    first_order = _tables(CUSTOMER_LINES)["transactions"].groupby("customer_id")["ts"].min()
    assert (first_stamp > first_order).all()
    assert first_stamp[2] == pd.Timestamp("2024-01-15")  # not 01-08: no order before it
    assert first_stamp[3] == pd.Timestamp("2024-01-15")  # an order at 01-08 00:00 is not before
    assert features["days_since_last_order"].notna().all()


# 121 days (Jan 1 .. Apr 30); the last snapshot ends day 120 and its 91 days are days 30..120.
CATEGORIES = {1: "bakery", 2: "apples", 3: "candy", 4: "dairy", 5: "zucchini", 6: ""}
MIX_LINES = [
    # customer 1: one early store order, then 4 orders in the last 91 days
    *[(1, 10, 5, 1, _day(0), 1, 1.0, "store") for _ in range(3)],
    (1, 11, 1, 1, _day(91), 1, 1.0, "web"),
    (1, 11, 2, 1, _day(91), 1, 1.0, "web"),
    (1, 12, 1, 1, _day(100), 1, 1.0, "web"),
    (1, 12, 2, 1, _day(100), 1, 1.0, "web"),
    (1, 12, 6, 1, _day(100), 1, 1.0, "web"),
    (1, 13, 4, 1, _day(110), 1, 1.0, "app"),
    (1, 13, 6, 1, _day(110), 1, 1.0, "app"),
    (1, 14, 3, 1, _day(115), 1, 1.0, "store"),
    (1, 14, 6, 1, _day(115), 1, 1.0, "store"),
    # customer 2: one mini-program order on day 9
    (2, 20, 2, 1, _day(9), 1, 1.0, "mini_program"),
    # customer 3: one order on the last day, of a product without a category name
    (3, 30, 6, 1, _day(120), 1, 1.0, "store"),
]
SHARES = ["share_store_91d", "share_web_91d", "share_app_91d", "share_mini_program_91d"]


def test_channel_shares_and_top_categories_over_the_last_91_days():
    features = customer_features(_tables(MIX_LINES, categories=CATEGORIES))
    last = pd.Timestamp("2024-05-01")
    assert features["event_timestamp"].max() == last

    one = _by_stamp(features, "customer_id", 1).loc[last]
    assert _values(one, SHARES) == [1 / 4, 2 / 4, 1 / 4, 0.0]  # the day-0 order is too old
    # bakery 2, apples 2, candy 1, dairy 1 (zucchini is too old, "" has no name): ties by name.
    assert one["top_categories"] == "apples|bakery|candy"
    assert _by_stamp(features, "customer_id", 1).loc["2024-01-08", "top_categories"] == "zucchini"

    two = _by_stamp(features, "customer_id", 2)
    assert _values(two.loc["2024-01-15"], SHARES) == [0.0, 0.0, 0.0, 1.0]
    assert two.loc["2024-01-15", "top_categories"] == "apples"
    assert _values(two.loc[last], SHARES) == [None] * 4  # no order in the window
    assert two.loc[last, "top_categories"] == ""
    assert two.loc[last, "orders_91d"] == 0

    three = _by_stamp(features, "customer_id", 3).loc[last]
    assert _values(three, SHARES) == [1.0, 0.0, 0.0, 0.0]
    assert three["top_categories"] == ""


CYCLE = ["days_since_last_order", "mean_days_between_orders", "std_days_between_orders"]


def test_purchase_cycle_is_over_distinct_order_days_of_all_history():
    lines = [
        _order(1, 1, _day(0), 1.0),
        _order(1, 2, _day(2), 1.0),
        _order(1, 3, _day(8, "09:00"), 1.0),
        _order(1, 4, _day(8, "18:00"), 1.0),  # a second order that day: not a gap of 0
        _order(1, 5, _day(20), 1.0),
        _order(2, 6, _day(3), 1.0),  # one order day: no cycle
    ]
    features = customer_features(_tables(lines))
    one = _by_stamp(features, "customer_id", 1)
    # Day 7: gaps [2]. Day 14: gaps [2, 6]. Day 21: gaps [2, 6, 12], mean 20/3.
    assert _values(one.loc["2024-01-08"], CYCLE + ["churn_risk"]) == [5, 2, None, 5 / 2]
    assert _values(one.loc["2024-01-15"], CYCLE + ["churn_risk"]) == [6, 4, 2, 6 / 4]
    std = float(np.std([2, 6, 12]))
    assert _values(one.loc["2024-01-22"], CYCLE + ["churn_risk"]) == [1, 20 / 3, std, 3 / 20]
    two = _by_stamp(features, "customer_id", 2)
    assert _values(two.loc["2024-01-22"], CYCLE + ["churn_risk"]) == [18, None, None, None]


# ---- store features -------------------------------------------------------------------------

# Thirty days (Jan 1 .. Jan 30); store 1 sells on days 0, 1 and 29, store 2 only on day 1.
STORE_LINES = [
    (1, 1, 100, 1, _day(0), 2, 4.0, "store", 0.0),
    (1, 1, 101, 1, _day(0), 1, 3.0, "store", 0.5),
    (1, 1, FUEL, 1, _day(0), 30, 60.0, "store", 0.0),  # not in units: sales but no units
    (2, 2, 100, 1, _day(1), 4, 8.0, "web", 1.0),
    (1, 3, 100, 1, _day(29), 1, 2.0, "store", 0.0),
    (3, 4, 100, 2, _day(1), 3, 6.0, "store", 0.0),
]
STORE_COLUMNS = [
    "units_per_day_28d",
    "baskets_per_day_28d",
    "avg_basket_value_28d",
    "promo_share_28d",
    "stockout_rate_28d",
]
STORE_INVENTORY = pd.DataFrame(
    [
        (1, 102, "2023-12-31", 0.0),  # before the first sale, inside the first window
        (1, 100, "2024-01-01", 5.0),
        (1, 101, "2024-01-01", 0.0),
        (1, 100, "2024-01-02", 0.0),
        (1, 101, "2024-01-02", 2.0),
        (1, 100, "2024-01-30", 0.0),
        (3, 100, "2024-01-10", 0.0),  # a store without sales
    ],
    columns=["store_id", "product_id", "date", "on_hand"],
)


def test_store_features_per_day_over_the_last_28_days():
    features = store_features(_tables(STORE_LINES, inventory=STORE_INVENTORY))
    one, two = (_by_stamp(features, "store_id", store) for store in (1, 2))
    assert list(one.index) == list(pd.date_range("2024-01-02", "2024-01-31"))  # days 0..29
    assert list(two.index) == list(pd.date_range("2024-01-03", "2024-01-31"))  # days 1..29
    assert (features.drop(columns=["store_id", "event_timestamp"]).dtypes == "float32").all()

    # Stamp Jan 2 sees day 0: units 2 + 1 (fuel left out), one basket of 67, 1 of 3 lines
    # discounted; stock: product 102 on Dec 31 and 101 on Jan 1 at zero, 100 not.
    assert _values(one.loc["2024-01-02"], STORE_COLUMNS) == [3 / 28, 1 / 28, 67.0, 1 / 3, 2 / 3]
    assert _values(one.loc["2024-01-03"], STORE_COLUMNS) == [7 / 28, 2 / 28, 75 / 2, 2 / 4, 3 / 5]
    # Jan 29 sees days 0..27 (Dec 31 has left the window); Jan 30 days 1..28; Jan 31 days 2..29.
    assert _values(one.loc["2024-01-29"], STORE_COLUMNS) == [7 / 28, 2 / 28, 75 / 2, 2 / 4, 2 / 4]
    assert _values(one.loc["2024-01-30"], STORE_COLUMNS) == [4 / 28, 1 / 28, 8.0, 1.0, 1 / 2]
    assert _values(one.loc["2024-01-31"], STORE_COLUMNS) == [1 / 28, 1 / 28, 2.0, 0.0, 1.0]
    # Store 2 has no inventory; on Jan 31 its only sale (day 1) has left the window.
    assert _values(two.loc["2024-01-03"], STORE_COLUMNS) == [3 / 28, 1 / 28, 6.0, 0.0, None]
    assert _values(two.loc["2024-01-31"], STORE_COLUMNS) == [0.0, 0.0, None, None, None]


def test_store_stockout_rate_is_nan_without_inventory():
    features = store_features(_tables(STORE_LINES))
    assert features["stockout_rate_28d"].isna().all()
    with_inventory = store_features(_tables(STORE_LINES, inventory=STORE_INVENTORY))
    pd.testing.assert_frame_equal(
        features.drop(columns="stockout_rate_28d"),
        with_inventory.drop(columns="stockout_rate_28d"),
    )


# ---- product features -----------------------------------------------------------------------

# 100 days (Jan 1 .. Apr 9): snapshots end days 28, 56, 84 and 100 (Jan 29, Feb 26, Mar 25, Apr 10).
PRODUCT_LINES = [
    (1, 1, 1, 1, _day(0), 2, 4.0),  # unit price 2.0
    (1, 2, 1, 1, _day(5), 1, 3.0),
    (2, 3, 1, 1, _day(10), 1, 2.5),
    (2, 3, 1, 1, _day(10), 0, 1.0),  # no units: no price; the same order: not a repeat
    (3, 6, 3, 1, _day(1), 1, 5.0),
    (1, 7, 4, 1, _day(20), 1, 1.0),
    (1, 5, 2, 1, _day(40), 2, 6.0),
    (2, 9, 1, 1, _day(60), 1, 4.0),
    (4, 8, 4, 1, _day(99), 1, 1.0),
]
PRODUCT_CATEGORIES = {1: "dairy", 2: "bakery", 3: "candy", 4: "dairy"}
LIST_PRICES = {1: 9.0, 2: 4.0, 3: 7.0, 4: 1.5}
PRODUCT_COLUMNS = ["price", "buyers_91d", "popularity_rank", "repeat_purchase_rate"]


def test_product_snapshots_every_28_days_with_hand_computed_values():
    tables = _tables(PRODUCT_LINES, categories=PRODUCT_CATEGORIES, list_prices=LIST_PRICES)
    features = product_features(tables)
    got = {
        (int(row.product_id), row.event_timestamp.strftime("%m-%d")): _values(row, PRODUCT_COLUMNS)
        for _, row in features.iterrows()
    }
    assert got == {
        # Product 1: unit prices 2, 3, 2.5 (then 4 on day 60); buyer 2 repeats on day 60.
        (1, "01-29"): [2.5, 2, 1, 1 / 2],
        (1, "02-26"): [2.5, 2, 1, 1 / 2],
        (1, "03-25"): [(2.5 + 3) / 2, 2, 1, 2 / 2],
        (1, "04-10"): [(2.5 + 4) / 2, 1, 2, 2 / 2],  # days 9..99 hold day 10 and day 60
        # Product 2: first sold on day 40.
        (2, "02-26"): [3.0, 1, 2, 0.0],
        (2, "03-25"): [3.0, 1, 2, 0.0],
        (2, "04-10"): [3.0, 1, 2, 0.0],
        # Product 3: sold on day 1 only; after day 91 its price falls back to the list price
        # and, without buyers, it ranks after the 3 products that have some.
        (3, "01-29"): [5.0, 1, 2, 0.0],
        (3, "02-26"): [5.0, 1, 2, 0.0],
        (3, "03-25"): [5.0, 1, 2, 0.0],
        (3, "04-10"): [7.0, 0, 4, 0.0],
        # Product 4: ties with the others until a second buyer on day 99.
        (4, "01-29"): [1.0, 1, 2, 0.0],
        (4, "02-26"): [1.0, 1, 2, 0.0],
        (4, "03-25"): [1.0, 1, 2, 0.0],
        (4, "04-10"): [1.0, 2, 1, 0.0],
    }
    assert features.set_index("product_id")["category"].to_dict() == PRODUCT_CATEGORIES
    assert (features[PRODUCT_COLUMNS].dtypes == "float32").all()


# ---- point in time: an event at T is seen by the rows stamped after T only -------------------


def _assert_seen_only_after(
    build: Callable[[dict], pd.DataFrame],
    key: str,
    lines: list[tuple],
    event: Callable[[str], list[tuple]],
    entity: int,
    stamp: pd.Timestamp,
    next_stamp: pd.Timestamp,
    **table_options,
) -> None:
    """Lines `event(ts)` just before `stamp` change the entity's row at `stamp`; at exactly
    `stamp` they change no row stamped up to `stamp`, and the entity's row at `next_stamp` does."""
    minute = pd.Timedelta(minutes=1)
    base, before, at_t = (
        build(_tables(lines + extra, **table_options))
        for extra in ([], event(f"{stamp - minute}"), event(f"{stamp}"))
    )

    def rows(frame: pd.DataFrame, keep: pd.Series) -> pd.DataFrame:
        return frame[keep].reset_index(drop=True)

    def row(frame: pd.DataFrame, when: pd.Timestamp) -> pd.DataFrame:
        return rows(frame, (frame["event_timestamp"] == when) & (frame[key] == entity))

    pd.testing.assert_frame_equal(
        rows(at_t, at_t["event_timestamp"] <= stamp), rows(base, base["event_timestamp"] <= stamp)
    )
    pd.testing.assert_frame_equal(
        rows(before, before["event_timestamp"] < stamp), rows(base, base["event_timestamp"] < stamp)
    )
    assert len(row(base, stamp)) == 1 and len(row(base, next_stamp)) == 1
    assert not row(before, stamp).equals(row(base, stamp))
    assert not row(at_t, next_stamp).equals(row(base, next_stamp))


def test_customer_features_see_an_order_at_t_only_after_t():
    _assert_seen_only_after(
        customer_features,
        "customer_id",
        CUSTOMER_LINES,
        lambda ts: [_order(1, 99, ts, 6.0)],
        entity=1,
        stamp=pd.Timestamp("2024-01-22"),
        next_stamp=pd.Timestamp("2024-01-29"),
    )


def test_store_features_see_a_sale_at_t_only_after_t():
    _assert_seen_only_after(
        store_features,
        "store_id",
        STORE_LINES,
        lambda ts: [(1, 98, 100, 1, ts, 1, 2.0, "store", 1.0)],
        entity=1,
        stamp=pd.Timestamp("2024-01-03"),
        next_stamp=pd.Timestamp("2024-01-04"),
        inventory=STORE_INVENTORY,
    )


def test_product_features_see_a_sale_at_t_only_after_t():
    _assert_seen_only_after(
        product_features,
        "product_id",
        PRODUCT_LINES,
        # A new buyer and a repeat: buyers, price, rank and repeat rate all move.
        lambda ts: [(5, 97, 2, 1, ts, 1, 5.0), (1, 96, 2, 1, ts, 1, 5.0)],
        entity=2,
        stamp=pd.Timestamp("2024-02-26"),
        next_stamp=pd.Timestamp("2024-03-25"),
        categories=PRODUCT_CATEGORIES,
        list_prices=LIST_PRICES,
    )
