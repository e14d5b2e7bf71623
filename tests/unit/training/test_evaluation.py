"""The two holdout protocols on hand-made histories: who is scored, on what, from what."""

import numpy as np
import pandas as pd
import pytest

from training.evaluation import next_basket, score_table_row, segments, time_split


def lines(rows):
    """(customer, product, day of January 2024[, quantity]) -> transactions."""
    frame = pd.DataFrame(
        [r if len(r) == 4 else (*r, 1.0) for r in rows],
        columns=["customer_id", "product_id", "day", "quantity"],
    )
    return frame.assign(
        order_id=frame["customer_id"] * 100 + frame["day"],
        store_id=1,
        channel="store",
        ts=pd.Timestamp("2024-01-01") + pd.to_timedelta(frame["day"], unit="D"),
        net_sales=1.0,
    ).drop(columns="day")


def test_time_split_scores_customers_seen_before_on_what_they_bought_after():
    data = lines(
        [
            (1, 10, 0),
            (1, 11, 40),
            (1, 12, 45),
            (1, 13, 50, -1.0),  # 13 is a return
            (2, 10, 45),
            (3, 10, 1),
            (4, 20, 2),
            (4, 20, 60),
        ]
    )
    holdout = time_split(data, test_days=28)  # cutoff: day 60 - 28 = day 32
    assert holdout.history["ts"].max() < pd.Timestamp("2024-02-02")
    assert holdout.customers.tolist() == [1, 4]  # 2 is new after the cutoff, 3 bought nothing
    assert holdout.relevant == [{11, 12}, {20}]
    assert holdout.bought_before == [{10}, {20}]
    assert holdout.split_relevant() == ([set(), {20}], [{11, 12}, set()])
    assert holdout.relevant_within(10) == [{11}, set()]


def test_next_basket_targets_each_customers_last_day_and_filters_rare_products():
    rows = [(c, 10, d) for c in (1, 2, 3) for d in (1, 5, 9)]  # product 10 in 9 baskets
    rows += [(2, 11, 1), (3, 11, 5), (1, 11, 5), (1, 11, 9)]  # 11: in 3 history baskets
    rows += [(1, 99, 1), (2, 99, 9)]  # 99: in 1 history basket, dropped as too rare
    rows += [(4, 10, 1), (4, 10, 2)]  # two baskets only: not scored
    holdout = next_basket(lines(rows), min_product_baskets=3)
    assert holdout.customers.tolist() == [1, 2, 3]
    assert holdout.relevant == [{10, 11}, {10}, {10}]
    assert 99 not in set(holdout.history["product_id"]) | set(holdout.target["product_id"])
    assert holdout.as_of.loc[1] == pd.Timestamp("2024-01-10")
    assert holdout.history["ts"].max() < pd.Timestamp("2024-01-10")


def test_score_row_splits_recall_into_repeat_and_new():
    data = lines([(1, 10, 0), (1, 10, 40), (1, 11, 41), (2, 10, 1), (2, 12, 40)])
    holdout = time_split(data, test_days=28)
    row = score_table_row(holdout, np.array([[10, 12] + [-1] * 18, [11, 12] + [-1] * 18]))
    assert row["recall_at_10"] == pytest.approx((1 / 2 + 1) / 2)
    assert row["repeat_recall_at_10"] == pytest.approx(1.0)  # only customer 1 has a repeat
    assert row["new_recall_at_10"] == pytest.approx((0 + 1) / 2)
    assert set(segments(holdout)) == {"new (< 5 baskets)", "returning (>= 5 baskets)"}
