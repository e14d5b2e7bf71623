"""One contract for every recommender, including a known-answer case."""

import numpy as np
import pandas as pd
import pytest

from training.recommender import ALSRecommender, NextBestProduct, PopularityRecommender


def baskets(rows: list[tuple[int, int]]) -> pd.DataFrame:
    """(customer, product) purchases, each its own order, all in store 1."""
    frame = pd.DataFrame(rows, columns=["customer_id", "product_id"])
    return frame.assign(
        order_id=np.arange(len(frame)),
        store_id=1,
        quantity=1.0,
        ts=pd.Timestamp("2024-01-01"),
        net_sales=1.0,
    )


# Two taste groups: customers 1-6 buy products 10-12, customers 7-12 buy 20-22.
# Customer 1 never bought 12; everyone else in the group did.
GROUPS = [(c, p) for c in range(1, 7) for p in (10, 11, 12) if not (c == 1 and p == 12)]
GROUPS += [(c, p) for c in range(7, 13) for p in (20, 21, 22)]
GROUPS += [(c, 20) for c in range(7, 13)]  # 20 is the most bought product overall


@pytest.fixture(params=["als", "popularity"])
def fitted(request):
    if request.param == "als":
        return ALSRecommender(factors=4, iterations=30, regularization=0.01).fit(baskets(GROUPS))
    return PopularityRecommender().fit(baskets(GROUPS))


def test_contract_shapes_and_padding(fitted):
    ids, scores = fitted.recommend(np.array([1, 7]), k=10)
    assert ids.shape == scores.shape == (2, 10)
    for row_ids, row_scores in zip(ids, scores, strict=True):
        real = row_ids >= 0
        assert len(set(row_ids[real])) == real.sum()  # no repeats
        assert np.isnan(row_scores[~real]).all()
        assert (np.diff(row_scores[real]) <= 1e-6).all()  # best first


def test_exclude_purchased_drops_bought_products(fitted):
    ids, _ = fitted.recommend(np.array([1]), k=3, exclude_purchased=True)
    assert not {10, 11} & set(ids[0][ids[0] >= 0])


def test_repeat_purchases_stay_eligible_by_default(fitted):
    ids, _ = fitted.recommend(np.array([7]), k=3)
    assert {20, 21, 22} & set(ids[0])


def test_als_known_answer_the_missing_item_of_the_group_comes_first():
    model = ALSRecommender(factors=4, iterations=30, regularization=0.01).fit(baskets(GROUPS))
    ids, _ = model.recommend(np.array([1]), k=1, exclude_purchased=True)
    assert ids[0, 0] == 12


def test_popularity_puts_the_most_ordered_product_first():
    ids, _ = PopularityRecommender().fit(baskets(GROUPS)).recommend(np.array([99]), k=1)
    assert ids[0, 0] == 20


def test_next_best_product_personalises_only_known_consenting_customers():
    data = baskets(GROUPS)
    served = NextBestProduct(ALSRecommender(factors=4).fit(data), PopularityRecommender().fit(data))
    _, _, personalised = served.recommend(
        np.array([1, 999, 7]), k=3, personalize=np.array([True, True, False])
    )
    assert personalised.tolist() == [True, False, False]
    frame = served.predict_frame(pd.DataFrame({"customer_id": [1, 999], "k": 2}))
    assert len(frame) == 4 and frame["rank"].tolist() == [1, 2, 1, 2]
