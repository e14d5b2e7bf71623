"""KPI report numbers against values worked out by hand on tiny tables."""

import math

import pandas as pd
import pytest

from pipelines import kpis

DAY = pd.Timestamp("2024-03-31")


def sale(customer, day, channel="store", quantity=1.0, store=1, product=10, spent=2.0):
    return {
        "customer_id": customer,
        "order_id": hash((customer, day, channel)) % 10**9,
        "product_id": product,
        "store_id": store,
        "channel": channel,
        "ts": pd.Timestamp(day) + pd.Timedelta(hours=10),
        "quantity": quantity,
        "net_sales": spent,
    }


def test_observed_stock_figures_worked_out_by_hand():
    # Start-of-day stock; product 10 sells out on day 2 (2 of 2), product 11 on day 1 (3 of 3).
    inventory = pd.DataFrame(
        {
            "store_id": [1, 1, 1, 1],
            "product_id": [10, 10, 11, 11],
            "date": pd.to_datetime(["2024-03-30", "2024-03-31"] * 2),
            "on_hand": [5.0, 2.0, 3.0, 4.0],
        }
    )
    transactions = pd.DataFrame(
        [
            sale(1, "2024-03-30", quantity=3, product=10),
            sale(2, "2024-03-31", quantity=2, product=10),
            sale(3, "2024-03-30", quantity=3, product=11),
            sale(4, "2024-03-31", quantity=1, product=11),
        ]
    )
    series = kpis.observed_series(inventory, transactions, DAY)
    ten = series.set_index("product_id").loc[10]
    assert ten["stockout_days"] == 1 and ten["sold"] == 5
    # Lost on the sold-out day: usual in-stock sales 3 minus the 2 sold.
    assert ten["lost"] == 1 and ten["avg_on_hand"] == 3.5
    eleven = series.set_index("product_id").loc[11]
    assert eleven["lost"] == 0  # it sold 3 on its sold-out day, more than its usual 1

    overall = kpis.stock_table(series, None).iloc[0]
    assert overall["stockout_rate"] == 0.5  # 2 of 4 series-days
    assert overall["fill_rate"] == pytest.approx(9 / 10)
    assert overall["inventory_turns"] == pytest.approx(9 * 365 / 14)  # 14 unit-days of stock
    assert overall["days_of_cover"] == pytest.approx(14 / 9)
    by_category = kpis.stock_table(series.assign(category=["a", "b"]), "category")
    assert by_category.set_index("category").loc["a", "fill_rate"] == pytest.approx(5 / 6)
    with pytest.raises(ValueError, match="no inventory snapshot"):
        kpis.observed_series(inventory, transactions, pd.Timestamp("2025-01-01"))


def test_customer_figures_worked_out_by_hand():
    # Window: Mar 4 .. Mar 31; the previous one: Feb 5 .. Mar 3.
    transactions = pd.DataFrame(
        [
            sale(1, "2024-02-10"),
            sale(1, "2024-03-10", channel="web", quantity=2),
            sale(1, "2024-03-20"),
            sale(2, "2024-02-20"),
            sale(3, "2024-03-25", channel="app"),
            sale(4, "2024-01-01", spent=10),
            sale(4, "2024-01-08", spent=10),
            sale(4, "2024-01-15", spent=10),
        ]
    )
    figures = kpis.customer_kpis(transactions, DAY)
    assert figures.active_customers == 2  # customers 1 and 3
    assert figures.repurchase_rate == 0.5  # of 1 and 2 (previous window), 1 came back
    assert figures.cross_channel_share == 0.5  # customer 1 used store and web
    mix = figures.channel_mix.set_index("channel")["share_of_units"]
    assert mix.to_dict() == {"app": 0.25, "store": 0.25, "web": 0.5}
    risk = figures.churn_risk
    # Customer 4 shopped every 7 days and was last seen 76 days ago; customer 1 is not overdue.
    assert risk["customer_id"].tolist() == [4]
    assert (
        risk["reason"].iloc[0]
        == "last visit 76 days ago, usually every 7 days (3 visits, 30 spent)"
    )


def test_alert_rules_are_parsed_strictly_and_checked_on_every_scope():
    values = pd.DataFrame(
        {
            "metric": ["stockout_rate", "stockout_rate", "stockout_rate", "p90_coverage"],
            "scope": ["store 1", "store 2", "all stores", "forecaster v3"],
            "value": [0.25, 0.10, 0.15, 0.80],
        }
    )
    known = set(values["metric"])
    rules = kpis.parse_rules(["stockout_rate > 0.20", "p90_coverage<0.85"], known)
    found = kpis.breaches(rules, values)
    assert found[["rule", "scope"]].values.tolist() == [
        ["stockout_rate > 0.2", "store 1"],
        ["p90_coverage < 0.85", "forecaster v3"],
    ]
    assert kpis.breaches(kpis.parse_rules(["stockout_rate >= 0.3"], known), values).empty
    with pytest.raises(ValueError, match="unknown metric 'stock_rate'"):
        kpis.parse_rules(["stock_rate > 1"], known)
    with pytest.raises(ValueError, match="write `metric op number`"):
        kpis.parse_rules(["stockout_rate = 1"], known)
    assert math.isnan(
        kpis.customer_kpis(pd.DataFrame([sale(1, "2024-03-30")]), DAY).repurchase_rate
    )
