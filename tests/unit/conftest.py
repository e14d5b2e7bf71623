"""A next-best-product model trained once on a small synthetic history, for the unit tests of
the model and of the lists the service keeps from it (no feature store: the ranker reads only
what the history says)."""

import pytest

from features import synthetic
from training.evaluation import time_split
from training.recommender import NextBestProduct, train_ranker

SHOP = synthetic.SyntheticConfig(
    n_customers=200, n_stores=2, n_products=40, n_categories=4, days=150, seed=5
)


@pytest.fixture(scope="session")
def shop_tables():
    return synthetic.generate(SHOP)


@pytest.fixture(scope="session")
def served(shop_tables):
    holdout = time_split(shop_tables["transactions"])
    ranker, reminders = train_ranker(holdout, shop_tables["products"])
    return NextBestProduct(ranker, reminders).fit(
        shop_tables["transactions"], shop_tables["products"]
    )
