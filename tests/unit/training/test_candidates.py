"""One contract for every candidate generator, and known answers for each."""

import numpy as np
import pandas as pd
import pytest

from training.candidates import (
    ALS,
    BPR,
    ItemItem,
    NewInCategory,
    Popular,
    PopularInStore,
    Repurchase,
    build_history,
    fill,
    top_n,
)

AS_OF = pd.Timestamp("2024-03-01")


def purchases(rows: list[tuple[int, int, int]], store: int = 1) -> pd.DataFrame:
    """(customer, product, days before AS_OF) lines, one order per customer and day."""
    frame = pd.DataFrame(rows, columns=["customer_id", "product_id", "days_ago"])
    return pd.DataFrame(
        {
            "customer_id": frame["customer_id"],
            "product_id": frame["product_id"],
            "order_id": frame["customer_id"] * 1000 + frame["days_ago"],
            "store_id": store,
            "quantity": 1.0,
            "ts": AS_OF - pd.to_timedelta(frame["days_ago"], unit="D") + pd.Timedelta(hours=10),
            "net_sales": 1.0,
        }
    )


# Two taste groups: customers 1-6 buy 10-12, customers 7-12 buy 20-22; customer 1 never bought
# 12. Product 20 is the most bought overall; customer 2 buys 10 every 7 days.
GROUPS = [(c, p, 30 + c) for c in range(1, 7) for p in (10, 11, 12) if not (c == 1 and p == 12)]
GROUPS += [(c, p, 40 + c) for c in range(7, 13) for p in (20, 21, 22)]
GROUPS += [(c, 20, 20 + c) for c in range(7, 13)]
GROUPS += [(2, 10, d) for d in (5, 12, 19, 26)]
PRODUCTS = pd.DataFrame(
    {
        "product_id": [10, 11, 12, 20, 21, 22, 30],
        "category": ["dairy", "dairy", "dairy", "bakery", "bakery", "bakery", "dairy"],
    }
)


@pytest.fixture(scope="module")
def history():
    # Product 30 is new: first sold 3 days ago, to customer 12 only.
    return build_history(purchases(GROUPS + [(12, 30, 3)]), AS_OF, PRODUCTS)


GENERATORS = {
    "repurchase": Repurchase,
    "als": ALS,
    "bpr": BPR,
    "item_item": ItemItem,
    "popular": Popular,
    "popular_in_store": PopularInStore,
    "new_in_category": NewInCategory,
}


def fitted(name, history):
    small = {
        "als": lambda: ALS(factors=4, iterations=30, regularization=0.01),
        "bpr": lambda: BPR(factors=4, iterations=200),
        "item_item": lambda: ItemItem(neighbours=10),
    }
    return small.get(name, GENERATORS[name])().fit(history)


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_contract_shapes_padding_order_and_repeats_kept(name, history):
    generator = fitted(name, history)
    ids, scores = generator.candidates(np.array([1, 7, 999]), 10)
    assert ids.shape == scores.shape == (3, 10) and ids.dtype == np.int64
    for row_ids, row_scores in zip(ids, scores, strict=True):
        real = row_ids >= 0
        assert real[: real.sum()].all(), "padding only at the end"
        assert len(set(row_ids[real])) == real.sum(), "no product twice"
        assert np.isnan(row_scores[~real]).all()
        assert (np.diff(row_scores[real]) <= 1e-6).all(), "best first"
        assert set(row_ids[real]) <= set(history.products["product_id"])


@pytest.mark.parametrize("name", ["als", "item_item", "repurchase"])
def test_personal_generators_keep_what_the_customer_already_buys(name, history):
    ids, _ = fitted(name, history).candidates(np.array([7]), 3)
    assert {20, 21, 22} & set(ids[0]), "implicit's filter_already_liked_items must be off"


@pytest.mark.parametrize("name", ["als", "bpr", "item_item", "repurchase", "new_in_category"])
def test_personal_generators_know_nothing_of_unknown_customers(name, history):
    ids, _ = fitted(name, history).candidates(np.array([999]), 5)
    assert (ids == -1).all()


def test_repurchase_ranks_by_recency_decayed_count(history):
    ids, scores = Repurchase().fit(history).candidates(np.array([2]), 3)
    assert ids[0, 0] == 10  # bought on five days, the others once
    baskets, _ = Repurchase("baskets").fit(history).candidates(np.array([2]), 1)
    assert baskets[0, 0] == 10


def test_popular_and_popular_in_store_put_the_most_bought_first(history):
    assert Popular().fit(history).candidates(np.array([1]), 1)[0][0, 0] == 20
    in_store = PopularInStore().fit(history)
    assert in_store.candidates(np.array([999]), 1, store_ids=np.array([1]))[0][0, 0] == 20
    assert (in_store.candidates(np.array([999]), 2, store_ids=np.array([5]))[0] == -1).all()


def test_item_item_finds_the_missing_item_of_the_group_and_says_why(history):
    model = fitted("item_item", history)
    ids, _ = model.candidates(np.array([1]), 3)
    assert 12 in ids[0]
    because = model.because_of(np.array([1]), np.array([12]))
    assert because[0] in (10, 11)


def test_als_known_answer_the_missing_item_of_the_group_ranks_above_the_other_group(history):
    ids, _ = fitted("als", history).candidates(np.array([1]), 6)
    order = list(ids[0])
    assert order.index(12) < min(order.index(p) for p in (20, 21, 22))


def test_new_products_reach_buyers_of_their_category(history):
    ids, _ = NewInCategory().fit(history).candidates(np.array([1, 7]), 2)
    assert ids[0, 0] == 30  # customer 1 buys dairy
    assert (ids[1] == -1).all()  # customer 7 buys only bakery


def test_new_products_cut_to_n_keep_the_most_bought_then_the_lowest_id():
    # Three new dairy products: 33 has two buyers, 31 and 32 one each (a tie).
    rows = [(1, 10, 40), (2, 10, 40), (5, 33, 2), (6, 33, 2), (5, 32, 2), (6, 31, 2)]
    products = pd.DataFrame({"product_id": [10, 31, 32, 33], "category": ["dairy"] * 4})
    generator = NewInCategory().fit(build_history(purchases(rows), AS_OF, products))
    ids, _ = generator.candidates(np.array([1, 2]), 2)
    assert ids.tolist() == [[33, 31], [33, 31]]


def test_history_counts_baskets_and_cycle(history):
    pair = history.pairs.set_index(["customer_id", "product_id"]).loc[(2, 10)]
    assert pair["baskets"] == 5 and pair["last_day"] == 6 and pair["first_day"] == 33
    assert pair["in_last_basket"] == 1


def test_top_n_and_fill():
    frame = pd.DataFrame(
        {"customer_id": [1, 1, 1, 2], "product_id": [5, 6, 7, 5], "s": [0.1, 0.9, 0.5, 1.0]}
    )
    ids, scores = top_n(frame, "s", np.array([2, 1, 3]), 2)
    assert ids.tolist() == [[5, -1], [6, 7], [-1, -1]]
    assert fill(np.array([[6, -1]]), np.array([[6, 9, 8]]), 3).tolist() == [[6, 9, 8]]
