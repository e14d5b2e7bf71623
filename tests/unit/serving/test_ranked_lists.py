"""The ranked lists the service keeps: the same products as ranking the request in full, kept
until the customer's profile changes, and bounded in number."""

import numpy as np
import pandas as pd
import pytest

from serving.ranked_lists import RankedLists


@pytest.fixture(scope="module")
def customers(served):
    return served.history_.customer_index.to_numpy()[:30]


@pytest.fixture(scope="module")
def lists(served, customers):
    kept = RankedLists(served, lookup=None, depth=25, capacity=100)
    assert kept.warm(pd.Series(7, index=customers), chunk=12) == len(customers)
    return kept


def test_kept_lists_are_the_models_ranking_with_its_reasons(served, lists, customers):
    for customer in customers[:5]:
        kept = lists.get_many([customer], None, np.array([True]), [7])[0]
        full = served.rank(np.array([customer]), 25)
        assert kept.products.tolist() == full["product_id"].tolist()
        assert kept.reasons.tolist() == full["reason"].tolist()
        assert kept.complete == (len(full) < 25)


@pytest.mark.parametrize(
    "rules",
    [
        {"exclude_purchased": True},
        {"include_categories": [0, 1]},  # the first two categories
        {"exclude_categories": [2], "exclude_purchased": True},
    ],
)
def test_rules_on_a_kept_list_give_the_first_k_of_the_full_ranking(served, lists, customers, rules):
    categories = sorted(served.categories())
    rules = {
        name: [categories[i] for i in value] if "categories" in name else value
        for name, value in rules.items()
    }
    k, compared = 5, 0
    for customer in customers:
        kept = lists.get_many([customer], None, np.array([True]), [7])[0]
        allowed = kept.allowed(
            rules.get("exclude_purchased", False),
            rules.get("include_categories"),
            rules.get("exclude_categories"),
        )
        if len(allowed) < k and not kept.complete:
            continue  # the service ranks this request in full
        full = served.rank(np.array([customer]), k, **rules)
        assert kept.products[allowed[:k]].tolist() == full["product_id"].tolist()
        compared += 1
    assert compared >= len(customers) // 2


def test_a_newer_profile_ranks_again_and_the_oldest_lists_are_dropped(served, customers):
    kept = RankedLists(served, lookup=None, depth=10, capacity=3)
    first = kept.get_many([customers[0]], None, np.array([True]), [1])[0]
    assert kept.get_many([customers[0]], None, np.array([True]), [1])[0] is first
    newer = kept.get_many([customers[0]], None, np.array([True]), [2])[0]
    assert newer is not first and newer.stamp == 2
    kept.get_many(list(customers[1:4]), None, np.ones(3, bool), [1, 1, 1])
    assert len(kept.lists) == 3 and (customers[0], kept.key(customers[0], None, True)[1]) not in (
        kept.lists
    )


def test_everyone_not_personalised_shares_the_stores_popular_list(served, customers):
    kept = RankedLists(served, lookup=None, depth=10, capacity=10)
    store = next(iter(served.stores_))
    popular = kept.get_many(
        [customers[0], None, 987654], store, np.zeros(3, bool), [None, None, None]
    )
    assert popular[0] is popular[1] is popular[2]
    assert set(popular[0].reasons) == {f"popular at store {store}"}
    assert not popular[0].bought.any()  # nothing of the customer's is used or filtered


def test_reminders_are_kept_per_customer_as_answered(served, lists, customers):
    for customer in customers[:5]:
        due = served.due(np.array([customer]), 3)
        answered = lists.reminders(int(customer), 3)
        assert [r["product_id"] for r in answered] == due["product_id"].tolist()
        assert [r["probability"] for r in answered] == due["probability"].round(4).tolist()
        assert all(r["reason"].startswith("bought every ~") for r in answered)
    assert lists.reminders(int(customers[0]), 3) is not lists.reminders(int(customers[0]), 3)
    assert lists.due[int(customers[0])][:3] == lists.reminders(int(customers[0]), 3)
