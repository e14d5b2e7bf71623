"""The served next-best-product model: ranker over candidates, serving rules, reasons and
reminders, trained on a small synthetic history (no feature store: the ranker reads only what
the history says)."""

import copy

import numpy as np
import pandas as pd
import pytest

from training.recommender import (
    BASELINES,
    FINAL,
    WindowRows,
    evaluate_protocol,
    fit_ranker,
)


@pytest.fixture(scope="module")
def regular(served):
    """A customer with a product bought on several days: the ranker personalises them."""
    pairs = served.history_.pairs
    return int(pairs.loc[pairs["baskets"] >= 3, "customer_id"].iloc[0])


def test_known_customers_get_a_personal_ranked_list_with_reasons(served, regular):
    frame = served.rank(np.array([regular]), 10)
    assert len(frame) == 10 and frame["personalized"].all()
    assert frame["rank"].tolist() == list(range(1, 11))
    assert frame["product_id"].is_unique
    assert (np.diff(frame["score"]) <= 0).all()
    assert frame["reason"].str.len().gt(0).all()
    bought = frame[frame["baskets"] >= 2].iloc[0]
    days_ago = int(bought["days_since_bought"]) - 1  # history day 1 is today
    assert bought["reason"].startswith(f"bought every ~{bought['cycle_days']:.0f} days, last ")
    assert bought["reason"].endswith(
        {0: "today", 1: "yesterday"}.get(days_ago, f"{days_ago} days ago")
    )


def test_unknown_and_opted_out_customers_get_popular_at_the_store(served, regular):
    store = next(iter(served.stores_))
    frame = served.rank(
        np.array([987654, regular]), 5, store_id=store, personalize=np.array([True, False])
    )
    assert not frame["personalized"].any()
    assert set(frame["reason"]) == {f"popular at store {store}"}
    # The opted-out customer's answer is the unknown customer's: nothing personal is used.
    lists = frame.groupby("customer_id")["product_id"].apply(list)
    assert lists.loc[987654] == lists.loc[regular]


def test_an_opted_out_customer_without_a_store_gets_nothing_from_their_history(served, regular):
    frame = served.rank(np.array([regular]), 5, personalize=np.array([False]))
    assert not frame["personalized"].any()
    assert set(frame["reason"]) == {"popular with all customers"}  # not their usual store
    with pytest.raises(ValueError, match="repeat"):
        served.rank(np.array([regular, regular]), 5)
    assert served.rank(np.array([], dtype=np.int64), 5).empty


def test_rules_exclude_repurchases_and_filter_categories(served, regular):
    bought = set(served.history_.pairs.query("customer_id == @regular")["product_id"])
    fresh = served.rank(np.array([regular]), 10, exclude_purchased=True)
    assert not set(fresh["product_id"]) & bought
    category = sorted(served.categories())[0]
    only = served.rank(np.array([regular]), 10, include_categories=[category])
    assert len(only) and set(served.category_.loc[only["product_id"]]) == {category}
    without = served.rank(np.array([regular]), 10, exclude_categories=[category])
    assert category not in set(served.category_.loc[without["product_id"]])


def test_reminders_are_the_customers_own_repeat_products_with_probabilities(served, regular):
    due = served.due(np.array([regular]), 3)
    assert 1 <= len(due) <= 3
    assert due["probability"].between(0, 1).all()
    assert (np.diff(due["probability"]) <= 0).all()
    repeat = served.history_.pairs.query("customer_id == @regular and baskets >= 2")
    assert set(due["product_id"]) <= set(repeat["product_id"])
    assert (due["due_in_days"] >= 0).all()


def test_a_model_says_when_an_older_omnishelf_fitted_it(served):
    assert served.unservable_reason() is None
    old = copy.copy(served)
    del old.format_version_  # as unpickled from before the format was recorded
    assert old.unservable_reason() == "it was fitted by an older omnishelf"


def test_pyfunc_frame_has_one_row_per_customer_and_rank(served, regular):
    frame = served.predict_frame(pd.DataFrame({"customer_id": [regular, 987654], "k": 2}))
    assert frame["rank"].tolist() == [1, 2, 1, 2]


@pytest.mark.parametrize("protocol", ["time_split", "next_basket"])
def test_evaluation_table_has_the_model_and_every_baseline_on_one_holdout(shop_tables, protocol):
    evaluation = evaluate_protocol(
        shop_tables["transactions"], shop_tables["products"], protocol, baselines=BASELINES
    )
    assert list(evaluation.table.index) == [FINAL, *BASELINES]
    assert evaluation.table["recall_at_10"].between(0, 1).all()
    assert evaluation.best_baseline in BASELINES
    # The synthetic shoppers have tastes a learned ranker can find: it beats popularity.
    recall = evaluation.table["recall_at_10"]
    assert recall[FINAL] > recall["popular"]
    assert set(evaluation.segments["model"]) == {FINAL, evaluation.best_baseline}


def test_time_features_count_from_the_day_of_recommending(served, regular):
    """A served model answers days after its data end: "days since" and the due dates move
    with the request's day, as for a customer who bought nothing since."""
    products = served.history_.pairs.query("customer_id == @regular and baskets >= 2")
    at_fit = served.rank(np.array([regular]), 200).set_index("product_id")
    later = served.rank(np.array([regular]), 200, today=served.day_ + pd.Timedelta(days=5))
    later = later.set_index("product_id")
    both = at_fit.index.intersection(products["product_id"]).intersection(later.index)
    assert len(both)
    assert (later.loc[both, "days_since_bought"] == at_fit.loc[both, "days_since_bought"] + 5).all()
    assert later.loc[both, "due_ratio"].to_numpy() == pytest.approx(
        (later.loc[both, "days_since_bought"] / later.loc[both, "cycle_days"]).to_numpy()
    )
    assert (later.loc[both, "decayed"] < at_fit.loc[both, "decayed"]).all()
    product = both[0]
    assert later.loc[product, "reason"].endswith(
        f"last {int(later.loc[product, 'days_since_bought']) - 1} days ago"
    )
    due = served.due(np.array([regular]), 20).set_index("product_id")["due_in_days"]
    sooner = served.due(np.array([regular]), 20, today=served.day_ + pd.Timedelta(days=2))
    sooner = sooner.set_index("product_id")["due_in_days"]
    common = due.index.intersection(sooner.index)
    assert len(common)
    assert sooner[common].to_numpy() == pytest.approx(np.maximum(0, due[common] - 2).to_numpy())
    # The data's own last day, or a day before it, is the history as fitted.
    before = served.due(np.array([regular]), 20, today=served.day_ - pd.Timedelta(days=3))
    assert before.set_index("product_id")["due_in_days"].equals(due)


def test_a_customer_in_two_holdouts_is_two_ranking_groups_whatever_their_ids():
    """Ids 5 in the second holdout and 5 + 2**40 in the first used to be one query group
    (id + holdout * 2**40): the first's unbought candidates then taught the second's ranking."""
    params = {"min_child_samples": 1, "min_data_in_bin": 1, "subsample": 1.0}
    params |= {"colsample_bytree": 1.0}
    customers = np.arange(5, 45)

    def window(ids, feature, bought):
        rows = pd.DataFrame(
            {
                "customer_id": np.repeat(ids, len(feature)),
                "product_id": np.tile(np.arange(len(feature)), len(ids)),
                "f": np.tile(feature, len(ids)),
            }
        )
        labels = np.tile(bought, len(ids)).astype(np.int8)
        return WindowRows(None, rows, labels, labels)

    learns = window(customers, [0.0, 1.0], [0, 1])  # bought the higher f
    unbought = window(customers + 2**40, [2.0, 3.0], [0, 0])  # nothing bought: nothing to learn
    alone, _ = fit_ranker([learns], params, num_boost_round=10, reminders=False)
    both, _ = fit_ranker([unbought, learns], params, num_boost_round=10, reminders=False)
    grid = pd.DataFrame({"f": [0.0, 1.0, 2.0, 3.0]})
    assert both.score(grid) == pytest.approx(alone.score(grid))


def test_the_served_ranker_is_refit_up_to_the_datas_last_day(served, shop_tables):
    transactions = shop_tables["transactions"]
    evaluation = evaluate_protocol(
        transactions, shop_tables["products"], "time_split", baselines=("popular",), refit=True
    )
    refit = evaluation.refit
    assert refit.fit_until == transactions["ts"].max()
    assert evaluation.holdout.as_of.max() < refit.fit_until  # the evaluation's cut-off
    assert refit.reminders is not None
    # Learned on other windows (the evaluated one newest), it scores the same rows otherwise.
    customers = served.history_.customer_index[:20].to_numpy()
    rows = served.features_.rows(served.pool_.candidates(customers))
    assert not np.allclose(refit.ranker.score(rows), evaluation.ranker.score(rows))
