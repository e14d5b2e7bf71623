"""The two holdout protocols on hand-made histories: who is scored, on what, from what."""

import numpy as np
import pandas as pd
import pytest

from training.candidates import build_history
from training.evaluation import next_basket, score_table_row, segments, split, time_split
from training.ranker import CandidatePool
from training.recommender import BASELINES, baseline_lists, earlier_holdouts


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


def test_next_basket_targets_the_first_basket_after_one_cutoff_without_leak():
    rows = [(c, 10, d) for c in (1, 2, 3) for d in (1, 5, 9)]  # product 10 in 9 baskets
    rows += [(2, 11, 1), (3, 11, 5), (1, 11, 5), (1, 11, 9)]  # 11: in 4 history baskets
    rows += [(1, 99, 1)]  # 99: in 1 history basket, dropped as too rare
    rows += [(1, 10, 20), (1, 11, 20), (1, 12, 30), (2, 10, 25), (3, 10, 40)]  # after T
    rows += [(4, 10, 1), (4, 10, 20)]  # two baskets with the target: not scored
    rows += [(5, 10, 1), (5, 10, 5), (5, 11, 9)]  # nothing after T: not scored
    rows += [(6, 77, 14), (6, 77, 16), (1, 77, 30)]  # 77 first bought after T
    holdout = next_basket(lines(rows), min_product_baskets=3)  # T: day 40 - 28 = day 12
    cutoff = pd.Timestamp("2024-01-13")
    assert holdout.cutoff == cutoff and (holdout.as_of == cutoff).all()
    assert holdout.history["ts"].max() < cutoff
    assert holdout.customers.tolist() == [1, 2, 3]
    # Each customer's first basket on or after T; customer 1's later basket (day 30) is not it.
    assert holdout.relevant == [{10, 11}, {10}, {10}]
    assert not {77, 99} & (set(holdout.history["product_id"]) | set(holdout.target["product_id"]))
    assert holdout.catalogue == 2


def test_score_row_splits_recall_into_repeat_and_new():
    data = lines([(1, 10, 0), (1, 10, 40), (1, 11, 41), (2, 10, 1), (2, 12, 40)])
    holdout = time_split(data, test_days=28)
    row = score_table_row(holdout, np.array([[10, 12] + [-1] * 18, [11, 12] + [-1] * 18]))
    assert row["recall_at_10"] == pytest.approx((1 / 2 + 1) / 2)
    assert row["repeat_recall_at_10"] == pytest.approx(1.0)  # only customer 1 has a repeat
    assert row["new_recall_at_10"] == pytest.approx((0 + 1) / 2)
    assert set(segments(holdout)) == {"new (< 5 baskets)", "returning (>= 5 baskets)"}


def test_next_basket_generators_and_baselines_see_nothing_after_the_cutoff_no_leak(shop_tables):
    sales, products = shop_tables["transactions"], shop_tables["products"]
    cutoff = sales["ts"].max() - pd.Timedelta(days=28)
    before = sales[sales["ts"] < cutoff]
    days = before.assign(day=before["ts"].dt.normalize()).groupby("customer_id")["day"].nunique()
    buyers = days.index[days.between(3, 40)][:60]
    assert len(buyers) == 60
    # A product nobody bought before T, then bought by 60 regulars who all shop again later:
    # with a cut-off per customer (their own last basket) it was in everyone's history.
    new = 10**6
    first_lines = sales[sales["customer_id"].isin(buyers)].drop_duplicates("customer_id")
    bought_new = first_lines.assign(product_id=new, ts=cutoff + pd.Timedelta(days=2, hours=10))
    later = first_lines.assign(ts=sales["ts"].max() - pd.Timedelta(days=1))
    data = pd.concat([sales, bought_new, later], ignore_index=True)
    holdout = next_basket(data)
    assert holdout.cutoff == cutoff
    assert holdout.history["ts"].max() < cutoff
    history = build_history(holdout.history, holdout.as_of, products)
    pool = CandidatePool().fit(history)
    # The generators' customer x product baskets are exactly those strictly before T.
    seen = data[
        (data["ts"] < cutoff)
        & (data["quantity"] > 0)
        & data["customer_id"].isin(holdout.as_of.index)
        & data["product_id"].isin(history.products["product_id"])
    ]
    baskets = seen.assign(day=seen["ts"].dt.normalize()).drop_duplicates(
        ["customer_id", "product_id", "day"]
    )
    assert pool.generators["item_item"].user_items_.sum() == len(baskets)
    assert new not in set(history.products["product_id"])
    assert new not in set(pool.candidates(holdout.customers)["product_id"])
    for name in BASELINES:
        assert new not in baseline_lists(name, pool, history, holdout.customers), name
    assert holdout.catalogue == history.products["product_id"].nunique()


@pytest.mark.parametrize("protocol", ["time_split", "next_basket"])
def test_tuning_windows_end_before_the_final_windows_cutoff_no_leak(shop_tables, protocol):
    """The windows a sweep tunes on and a ranker learns from (earlier_holdouts) hold nothing
    from the cut-off of the final window on, whose targets all come after it."""
    final = split(shop_tables["transactions"], protocol)
    earlier = earlier_holdouts(final, 3)
    assert len(earlier) == 3
    assert final.target["ts"].min() >= final.cutoff
    for window in earlier:
        assert window.cutoff < final.cutoff
        assert window.target["ts"].max() < final.cutoff
        assert window.history["ts"].max() < window.cutoff
