"""The ranked lists the service keeps: the same products as ranking the request in full, kept
until the customer's profile or the day changes, and bounded in number."""

import numpy as np
import pandas as pd
import pytest

from serving.ranked_lists import RankedLists


@pytest.fixture(scope="module")
def customers(served):
    return served.history_.customer_index.to_numpy()[:30]


@pytest.fixture(scope="module")
def day(served):
    """The morning after the model's data end, as the service's data clock says."""
    return served.day_ + pd.Timedelta(days=1)


@pytest.fixture(scope="module")
def lists(served, customers, day):
    kept = RankedLists(served, lookup=None, depth=25, capacity=100)
    assert kept.warm(pd.Series(7, index=customers), day, chunk=12) == len(customers)
    return kept


def test_kept_lists_are_the_models_ranking_with_its_reasons(served, lists, customers, day):
    for customer in customers[:5]:
        kept = lists.get_many([customer], None, np.array([True]), [7], day)[0]
        full = served.rank(np.array([customer]), 25, today=day)
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
def test_rules_on_a_kept_list_give_the_first_k_of_the_full_ranking(
    served, lists, customers, day, rules
):
    categories = sorted(served.categories())
    rules = {
        name: [categories[i] for i in value] if "categories" in name else value
        for name, value in rules.items()
    }
    k, compared = 5, 0
    for customer in customers:
        kept = lists.get_many([customer], None, np.array([True]), [7], day)[0]
        allowed = kept.allowed(
            rules.get("exclude_purchased", False),
            rules.get("include_categories"),
            rules.get("exclude_categories"),
        )
        if len(allowed) < k and not kept.complete:
            continue  # the service ranks this request in full
        full = served.rank(np.array([customer]), k, today=day, **rules)
        assert kept.products[allowed[:k]].tolist() == full["product_id"].tolist()
        compared += 1
    assert compared >= len(customers) // 2


def test_a_newer_profile_ranks_again_and_the_oldest_lists_are_dropped(served, customers, day):
    kept = RankedLists(served, lookup=None, depth=10, capacity=3)
    first = kept.get_many([customers[0]], None, np.array([True]), [1], day)[0]
    assert kept.get_many([customers[0]], None, np.array([True]), [1], day)[0] is first
    newer = kept.get_many([customers[0]], None, np.array([True]), [2], day)[0]
    assert newer is not first and newer.stamp == 2
    kept.get_many(list(customers[1:4]), None, np.ones(3, bool), [1, 1, 1], day)
    assert len(kept.lists) == 3 and kept.key(customers[0], None, True, day) not in kept.lists


def test_everyone_not_personalised_shares_the_stores_popular_list(served, customers, day):
    kept = RankedLists(served, lookup=None, depth=10, capacity=10)
    store = next(iter(served.stores_))
    popular = kept.get_many(
        [customers[0], None, 987654], store, np.zeros(3, bool), [None, None, None], day
    )
    assert popular[0] is popular[1] is popular[2]
    assert set(popular[0].reasons) == {f"popular at store {store}"}
    assert not popular[0].bought.any()  # nothing of the customer's is used or filtered


def test_reminders_are_kept_per_customer_as_answered(served, lists, customers, day):
    for customer in customers[:5]:
        due = served.due(np.array([customer]), 3, today=day)
        answered = lists.reminders(int(customer), 3, day)
        assert [r["product_id"] for r in answered] == due["product_id"].tolist()
        assert [r["probability"] for r in answered] == due["probability"].round(4).tolist()
        assert all(r["reason"].startswith("bought every ~") for r in answered)
    first = int(customers[0])
    assert lists.reminders(first, 3, day) is not lists.reminders(first, 3, day)
    assert lists.due[first, day][:3] == lists.reminders(first, 3, day)


def test_a_new_day_ranks_again_and_its_reminders_come_a_day_closer(served, customers, day):
    kept = RankedLists(served, lookup=None, depth=25, capacity=100)
    kept.warm(pd.Series(7, index=customers), day)
    later = day + pd.Timedelta(days=1)
    regular = int(served.history_.pairs.query("baskets >= 3")["customer_id"].iloc[0])
    before = kept.get_many([regular], None, np.array([True]), [7], day)[0]
    after = kept.get_many([regular], None, np.array([True]), [7], later)[0]
    assert after is not before  # ranked for the new day, not the kept list
    assert (
        after.products.tolist()
        == served.rank(np.array([regular]), 25, today=later)["product_id"].tolist()
    )
    due = {r["product_id"]: r["due_in_days"] for r in kept.reminders(regular, 20, day)}
    due_later = {r["product_id"]: r["due_in_days"] for r in kept.reminders(regular, 20, later)}
    assert due.keys() & due_later.keys()
    for product in due.keys() & due_later.keys():
        assert due_later[product] == pytest.approx(max(0.0, due[product] - 1), abs=0.11)
    kept.forget_days_before(later)  # once the new day is served, the old day's lists go
    assert {key[-1] for key in kept.lists} == {later}
    assert {key[-1] for key in kept.due} == {later}
