"""The learned part of next-best-product: a LightGBM lambdarank model over the union of the
candidate generators' lists.

Each row is one customer x candidate product. Its features are every generator's score and rank
(absent = NaN), what the customer's own history says about the product (how often, how recently,
on what cycle), how the product sells, and the Feast features of customer, product and store
that the caller attaches (`recommender_v1`). The ranker learns on an earlier holdout of the same
protocol (history before it, its target as labels), so it never sees the evaluated target.
"""

from __future__ import annotations

from collections.abc import Callable

import lightgbm as lgb
import numpy as np
import pandas as pd
import scipy.sparse as sp

from features.contract import CATEGORY, CUSTOMER_ID, PRODUCT_ID, STORE_ID
from training.candidates import (
    ALS,
    RECENCY_HALF_LIFE_DAYS,
    History,
    ItemItem,
    NewInCategory,
    Popular,
    PopularInStore,
    Repurchase,
)

# How many products each generator proposes per customer: the union is what the ranker orders.
# Halving every list (from 100/50/50/30/30/10) kept both protocols' Recall@10 and NDCG@10 on
# Complete Journey within run-to-run noise and halved the rows that training and serving rank.
POOL_SIZES = {
    "repurchase": 50,
    "als": 25,
    "item_item": 25,
    "popular": 15,
    "popular_in_store": 15,
    "new_in_category": 5,
}
NOT_FEATURES = (CUSTOMER_ID, PRODUCT_ID, STORE_ID)
RANKER_PARAMS = {
    "objective": "lambdarank",
    "learning_rate": 0.05,
    # Few leaves, big leaves: in exploratory runs on Complete Journey, 63-leaf trees learned
    # the earlier holdouts' noise and ranked worse.
    "num_leaves": 7,
    "min_child_samples": 500,
    "subsample": 0.8,
    "subsample_freq": 1,
    "colsample_bytree": 0.8,
    "lambdarank_truncation_level": 30,
    "verbose": -1,
    "num_threads": 2,
    "seed": 0,
}
# 300 rounds ranked as well as 600 on both protocols' earlier holdouts, in half the time.
NUM_BOOST_ROUND = 300
EXTRA_HALF_LIVES = (7, 30)  # short recency half-lives beside the repurchase generator's 120 days
NEIGHBOURS = 100  # user-KNN: the most similar customers (cosine of decayed baskets) that vote

# Attaches Feast features to rows of customer_id, product_id, store_id and event_timestamp.
FeatureLookup = Callable[[pd.DataFrame], pd.DataFrame]


def default_generators() -> dict:
    return {
        "repurchase": Repurchase(),
        "als": ALS(),
        "item_item": ItemItem(),
        "popular": Popular(),
        "popular_in_store": PopularInStore(),
        "new_in_category": NewInCategory(),
    }


class CandidatePool:
    """The generators, fitted together on one history, proposing one long frame of candidates."""

    def __init__(self, generators: dict | None = None, sizes: dict[str, int] | None = None):
        self.generators = generators or default_generators()
        self.sizes = sizes or POOL_SIZES

    def fit(self, history: History) -> CandidatePool:
        for generator in self.generators.values():
            generator.fit(history)
        return self

    def candidates(
        self, customer_ids: np.ndarray, store_ids: np.ndarray | None = None
    ) -> pd.DataFrame:
        """customer_id, product_id and `<generator>_score`/`_rank` for the union of the lists."""
        customer_ids = np.asarray(customer_ids)
        frames = []
        for name, generator in self.generators.items():
            n = self.sizes.get(name, 0)
            if n == 0:
                continue
            if name == "popular_in_store":
                ids, scores = generator.candidates(customer_ids, n, store_ids)
            else:
                ids, scores = generator.candidates(customer_ids, n)
            valid = ids >= 0
            rows, ranks = np.nonzero(valid)
            frames.append(
                pd.DataFrame(
                    {
                        CUSTOMER_ID: customer_ids[rows],
                        PRODUCT_ID: ids[valid],
                        f"{name}_score": scores[valid],
                        f"{name}_rank": (ranks + 1).astype(np.float32),
                    }
                ).set_index([CUSTOMER_ID, PRODUCT_ID])
            )
        union = pd.concat(frames, axis=1, join="outer", sort=False)
        return union.reset_index()


class HistoryFeatures:
    """What the history says about a candidate: the customer's cycle with the product, the
    customer's habits, and how the product sells and is rebought. Fitted once per history so
    that rows for one customer at serving time are lookups, not group-bys."""

    def fit(self, history: History) -> HistoryFeatures:
        pairs = history.pairs
        self.pairs_ = pairs.set_index([CUSTOMER_ID, PRODUCT_ID])
        self.customers_ = history.customers.set_index(CUSTOMER_ID).rename(
            columns={
                "baskets": "customer_baskets",
                "last_day": "days_since_last_basket",
                "first_day": "customer_tenure_days",
            }
        )[["customer_baskets", "days_since_last_basket", "customer_tenure_days"]]
        self.customers_["customer_basket_rate"] = (
            self.customers_["customer_baskets"] / self.customers_["customer_tenure_days"]
        )
        products = history.products.set_index(PRODUCT_ID)
        recent = pairs.loc[pairs["last_day"] <= 28, PRODUCT_ID].value_counts()
        week = pairs.loc[pairs["last_day"] <= 7, PRODUCT_ID].value_counts()
        self.products_ = pd.DataFrame(
            {
                "product_buyers": products["buyers"],
                "product_baskets": products["baskets"],
                "product_repeat_rate": (pairs["baskets"] >= 2).groupby(pairs[PRODUCT_ID]).mean(),
                "product_recent_buyers": recent.reindex(products.index).fillna(0),
                "product_week_buyers": week.reindex(products.index).fillna(0),
                "product_age_days": products["first_sold_day"],
            }
        )
        self.products_["product_trend"] = (
            4
            * self.products_["product_week_buyers"]
            / (self.products_["product_recent_buyers"] + 1)
        )
        self.category_ = products[CATEGORY]
        by_category = pairs.assign(
            **{CATEGORY: self.category_.reindex(pairs[PRODUCT_ID]).to_numpy()}
        )
        affinity = by_category.groupby([CUSTOMER_ID, CATEGORY])["decayed"].sum()
        total = pairs.groupby(CUSTOMER_ID)["decayed"].sum()
        self.affinity_ = affinity / total.reindex(affinity.index.get_level_values(0)).to_numpy()
        # The product's usual repurchase cycle across its repeat buyers.
        cycle = ((pairs["first_day"] - pairs["last_day"]) / (pairs["baskets"] - 1)).where(
            pairs["baskets"] >= 2
        )
        self.products_["product_median_cycle"] = cycle.groupby(pairs[PRODUCT_ID]).median()
        self.products_["product_baskets_per_buyer"] = pairs.groupby(PRODUCT_ID)["baskets"].mean()
        lines = history.lines  # basket lines: needed here, dropped from served models after
        self.half_lives_ = {}
        for half_life in EXTRA_HALF_LIVES:
            weight = np.exp2(-lines["day"].to_numpy() / half_life)
            self.half_lives_[half_life] = (
                pd.Series(weight).groupby([lines[CUSTOMER_ID], lines[PRODUCT_ID]]).sum()
            )
        # The customer's cycle with each category: days since, mean gap, visits.
        visits = lines.assign(
            **{CATEGORY: self.category_.reindex(lines[PRODUCT_ID]).to_numpy()}
        ).drop_duplicates([CUSTOMER_ID, CATEGORY, "day"])
        self.category_visits_ = visits.groupby([CUSTOMER_ID, CATEGORY])["day"].agg(
            ["min", "max", "size"]
        )
        # User-KNN: each customer's NEIGHBOURS most similar customers, for a neighbour vote.
        self.customer_index_ = history.customer_index
        self.product_index_ = history.product_index
        decayed = history.matrix("decayed")
        norms = np.sqrt(np.asarray(decayed.multiply(decayed).sum(axis=1)).ravel()) + 1e-9
        self.normalised_ = (sp.diags(1.0 / norms) @ decayed).tocsr().astype(np.float32)
        self.by_product_ = self.normalised_.tocsc()  # column slices per candidate block
        return self

    def _neighbour_votes(self, customers: np.ndarray, products: np.ndarray) -> np.ndarray:
        """Sum over each customer's NEIGHBOURS most similar customers of similarity x their
        normalised decayed count of the product, for the asked (customer, product) pairs."""
        rows = self.customer_index_.get_indexer(customers)
        cols = self.product_index_.get_indexer(products)
        votes = np.zeros(len(rows), np.float32)
        asked = np.flatnonzero((rows >= 0) & (cols >= 0))
        asked = asked[np.argsort(rows[asked], kind="stable")]
        wanted = np.unique(rows[asked])
        for start in range(0, len(wanted), 256):
            block = wanted[start : start + 256]
            similarity = (self.normalised_[block] @ self.normalised_.T).toarray()
            similarity[np.arange(len(block)), block] = 0.0
            if similarity.shape[1] > NEIGHBOURS:
                kth = -np.partition(-similarity, NEIGHBOURS, axis=1)[:, NEIGHBOURS][:, None]
                similarity[similarity < kth] = 0.0
            lo, hi = np.searchsorted(rows[asked], [block[0], block[-1] + 1])
            at = asked[lo:hi]
            # Only the block's candidate products: the full product axis costs 4x more here.
            needed, column = np.unique(cols[at], return_inverse=True)
            # Dense: picking single cells out of a sparse product costs more than densifying.
            scores = (sp.csr_matrix(similarity) @ self.by_product_[:, needed]).toarray()
            votes[at] = scores[np.searchsorted(block, rows[at]), column]
        return votes

    def rows(self, candidates: pd.DataFrame, days_later: int = 0) -> pd.DataFrame:
        """The features of each candidate row. `days_later`: days from the history's moment to
        the day of recommending (a served model answering after its data ended): the day
        counts grow and the recency weights decay by that much, as for a customer who bought
        nothing since; counts in fixed windows (`baskets_28d`, the product's recent buyers)
        stay as the history left them."""
        keys = pd.MultiIndex.from_frame(candidates[[CUSTOMER_ID, PRODUCT_ID]])
        pair = self.pairs_.reindex(keys)
        counts = [c for c in pair.columns if c.startswith(("baskets", "in_last", "decayed"))]
        pair[counts] = pair[counts].fillna(0.0)
        customers = self.customers_.reindex(candidates[CUSTOMER_ID]).reset_index(drop=True)
        products = self.products_.reindex(candidates[PRODUCT_ID]).reset_index(drop=True)
        candidates = candidates.reset_index(drop=True)
        if days_later:  # days since bought and since the category move below, in numpy
            customers["days_since_last_basket"] += days_later
            customers["customer_tenure_days"] += days_later
            customers["customer_basket_rate"] = (
                customers["customer_baskets"] / customers["customer_tenure_days"]
            )
            products["product_age_days"] += days_later
            # Every basket ages alike: a decayed count decays by one factor.
            later = np.exp2(-days_later / RECENCY_HALF_LIFE_DAYS)
            pair["decayed"] *= later
            if "repurchase_score" in candidates:  # the repurchase generator's decayed count
                candidates["repurchase_score"] *= later
        frame = pd.concat(
            [
                candidates,
                pair.drop(columns=["last_day", "first_day", "baskets_since"]).reset_index(
                    drop=True
                ),
                customers,
                products,
            ],
            axis=1,
        )
        frame["baskets_since_bought"] = pair["baskets_since"].to_numpy()
        frame["days_since_bought"] = pair["last_day"].to_numpy() + days_later
        cycle = (pair["first_day"] - pair["last_day"]) / (pair["baskets"] - 1)
        frame["cycle_days"] = cycle.where(pair["baskets"] >= 2).to_numpy()
        frame["due_ratio"] = frame["days_since_bought"] / frame["cycle_days"]
        frame["basket_share"] = frame["baskets"] / frame["customer_baskets"]
        category = self.category_.reindex(candidates[PRODUCT_ID]).to_numpy()
        by_category = pd.MultiIndex.from_arrays([candidates[CUSTOMER_ID], category])
        frame["category_affinity"] = np.nan_to_num(self.affinity_.reindex(by_category).to_numpy())
        frame["due_vs_product"] = frame["days_since_bought"] / frame["product_median_cycle"]
        for half_life, decayed in self.half_lives_.items():
            later = np.exp2(-days_later / half_life)
            frame[f"decayed_{half_life}"] = decayed.reindex(keys).fillna(0.0).to_numpy() * later
        customer = frame.groupby(CUSTOMER_ID)
        for column in ("decayed", "baskets"):
            frame[f"{column}_rank_in_customer"] = customer[column].rank(
                ascending=False, method="min"
            )
        frame["decayed_share"] = frame["decayed"] / customer["decayed"].transform("sum")
        visits = self.category_visits_.reindex(by_category)
        frame["category_days_since"] = visits["min"].to_numpy() + days_later
        frame["category_cycle"] = (
            ((visits["max"] - visits["min"]) / (visits["size"] - 1))
            .where(visits["size"] >= 2)
            .to_numpy()
        )
        frame["category_due"] = frame["category_days_since"] / frame["category_cycle"]
        frame["category_baskets"] = visits["size"].to_numpy()
        frame["knn_score"] = self._neighbour_votes(
            candidates[CUSTOMER_ID].to_numpy(), candidates[PRODUCT_ID].to_numpy()
        )
        frame["knn_rank"] = frame.groupby(CUSTOMER_ID)["knn_score"].rank(
            ascending=False, method="first"
        )
        return frame


def label(candidates: pd.DataFrame, customers: np.ndarray, relevant: list[set]) -> np.ndarray:
    truth = pd.DataFrame(
        [(c, p) for c, products in zip(customers, relevant, strict=True) for p in products],
        columns=[CUSTOMER_ID, PRODUCT_ID],
    )
    keys = pd.MultiIndex.from_frame(candidates[[CUSTOMER_ID, PRODUCT_ID]])
    return keys.isin(pd.MultiIndex.from_frame(truth)).astype(np.int8)


class Ranker:
    """LightGBM lambdarank over candidate rows, grouped by customer (and holdout)."""

    def __init__(self, params: dict | None = None, num_boost_round: int = NUM_BOOST_ROUND):
        self.params = {**RANKER_PARAMS, **(params or {})}
        self.num_boost_round = num_boost_round

    def fit(self, rows: pd.DataFrame, labels: np.ndarray, groups=None) -> Ranker:
        """`groups`: the query group of each row (rows of one customer in one holdout), by
        default its customer."""
        rows = rows.reset_index(drop=True)
        groups = rows[CUSTOMER_ID].to_numpy() if groups is None else np.asarray(groups)
        order = np.argsort(groups, kind="stable")
        rows, labels, groups = rows.iloc[order], np.asarray(labels)[order], groups[order]
        # Groups none of whose candidates were bought teach lambdarank nothing.
        useful = pd.Series(labels).groupby(groups).transform("max").to_numpy() > 0
        rows, labels, groups = rows[useful], labels[useful], groups[useful]
        numeric = rows.select_dtypes(include=["number", "bool"]).columns
        self.feature_names_ = [c for c in numeric if c not in NOT_FEATURES and "opt_out" not in c]
        _, sizes = np.unique(groups, return_counts=True)  # sorted groups: in row order
        data = lgb.Dataset(rows[self.feature_names_], labels, group=sizes, free_raw_data=True)
        self.booster_ = lgb.train(self.params, data, num_boost_round=self.num_boost_round)
        return self

    def score(self, rows: pd.DataFrame) -> np.ndarray:
        return self.booster_.predict(
            rows[self.feature_names_], num_threads=self.params["num_threads"]
        )

    def feature_importance(self) -> pd.Series:
        gain = self.booster_.feature_importance(importance_type="gain")
        return pd.Series(gain, index=self.feature_names_).sort_values(ascending=False)
