"""Candidate generators for next-best-product, behind one small contract.

Every generator is fitted on a `History` (what customers bought before the moment of
recommending) and answers `candidates(customer_ids, n) -> (product_ids, scores)`, arrays of shape
(len(customer_ids), n), best first, padded with -1 / NaN. Grocery is repeat-heavy, so products a
customer already bought stay eligible: implicit's `filter_already_liked_items=True` default would
drop exactly the items that carry most of the recall.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from features.contract import CATEGORY, CUSTOMER_ID, PRODUCT_ID, QUANTITY, STORE_ID, TS

DAY = "day"
RECENCY_HALF_LIFE_DAYS = 120.0  # Complete Journey R@10 .0986 vs .0920 undecayed (benchmark)
NEW_PRODUCT_DAYS = 28
MAX_NEW_PER_CATEGORY = 20  # a product first sold this recently has too few buyers to be learned


@dataclass
class History:
    """What each customer bought before their moment of recommending (`as_of`).

    `pairs` has one row per customer x product: `baskets` (distinct shopping days with it),
    `first_day`/`last_day` (days before as_of, > 0) and `decayed` (baskets weighted by recency).
    A basket is everything a customer bought on one calendar day, whatever the channel.
    """

    pairs: pd.DataFrame
    lines: pd.DataFrame  # customer_id, product_id, day, basket_rank (0 = the customer's latest)
    customers: pd.DataFrame  # customer_id, baskets, last_day, first_day, store_id (most visited)
    products: pd.DataFrame  # product_id, category, first_sold_day, buyers, baskets
    store_products: pd.DataFrame  # store_id, product_id, baskets
    as_of: pd.Series  # customer_id -> timestamp of recommending

    @property
    def customer_index(self) -> pd.Index:
        return pd.Index(self.customers[CUSTOMER_ID])

    @property
    def product_index(self) -> pd.Index:
        return pd.Index(self.products[PRODUCT_ID])

    def matrix(self, values: str = "baskets") -> sp.csr_matrix:
        """customers x products, in the order of `customers` and `products`."""
        rows = self.customer_index.get_indexer(self.pairs[CUSTOMER_ID])
        cols = self.product_index.get_indexer(self.pairs[PRODUCT_ID])
        return sp.csr_matrix(
            (self.pairs[values].to_numpy(np.float32), (rows, cols)),
            shape=(len(self.customers), len(self.products)),
        )


def build_history(
    transactions: pd.DataFrame,
    as_of: pd.Timestamp | pd.Series,
    products: pd.DataFrame | None = None,
    half_life_days: float = RECENCY_HALF_LIFE_DAYS,
) -> History:
    """Summarise `transactions` (already cut to what may be seen) as of one moment or a moment
    per customer (a Series customer_id -> timestamp)."""
    sold = transactions.loc[transactions[QUANTITY] > 0, [CUSTOMER_ID, PRODUCT_ID, STORE_ID, TS]]
    if sold.empty:
        raise ValueError("no purchases with a positive quantity to learn from")
    if isinstance(as_of, pd.Series):
        moment = sold[CUSTOMER_ID].map(as_of)
        if moment.isna().any():
            raise ValueError("as_of names no moment for some customers in the transactions")
    else:
        moment = pd.Series(as_of, index=sold.index)
        as_of = pd.Series(as_of, index=pd.Index(sold[CUSTOMER_ID].unique(), name=CUSTOMER_ID))
    # Days before the moment of recommending, counted in whole calendar days of the basket.
    age = (moment.dt.normalize() - sold[TS].dt.normalize()).dt.days.to_numpy() + 1
    sold = sold.assign(**{DAY: age})
    baskets = sold.drop_duplicates([CUSTOMER_ID, PRODUCT_ID, DAY])
    visits = sold.drop_duplicates([CUSTOMER_ID, DAY])
    visit_rank = visits.groupby(CUSTOMER_ID)[DAY].rank(method="first").astype(np.int32) - 1
    visit_rank = pd.Series(
        visit_rank.to_numpy(), index=pd.MultiIndex.from_frame(visits[[CUSTOMER_ID, DAY]])
    )
    lines = baskets[[CUSTOMER_ID, PRODUCT_ID, DAY]].reset_index(drop=True)
    lines["basket_rank"] = visit_rank.reindex(
        pd.MultiIndex.from_frame(lines[[CUSTOMER_ID, DAY]])
    ).to_numpy()
    decay = np.exp2(-lines[DAY].to_numpy() / half_life_days)
    recent = lines["basket_rank"].to_numpy()
    pairs = (
        lines.assign(
            decayed=decay,
            baskets_28d=lines[DAY] <= 28,
            baskets_91d=lines[DAY] <= 91,
            in_last_basket=recent < 1,
            in_last_3_baskets=recent < 3,
            in_last_10_baskets=recent < 10,
        )
        .groupby([CUSTOMER_ID, PRODUCT_ID], sort=True)
        .agg(
            baskets=(DAY, "size"),
            last_day=(DAY, "min"),
            first_day=(DAY, "max"),
            baskets_since=("basket_rank", "min"),
            decayed=("decayed", "sum"),
            baskets_28d=("baskets_28d", "sum"),
            baskets_91d=("baskets_91d", "sum"),
            in_last_basket=("in_last_basket", "sum"),
            in_last_3_baskets=("in_last_3_baskets", "sum"),
            in_last_10_baskets=("in_last_10_baskets", "sum"),
        )
        .reset_index()
    )
    customers = visits.groupby(CUSTOMER_ID, sort=True).agg(
        baskets=(DAY, "size"), last_day=(DAY, "min"), first_day=(DAY, "max")
    )
    store_visits = sold.drop_duplicates([CUSTOMER_ID, STORE_ID, DAY])
    customers[STORE_ID] = (
        store_visits.groupby([CUSTOMER_ID, STORE_ID])
        .size()
        .sort_values(ascending=False, kind="stable")
        .reset_index()
        .drop_duplicates(CUSTOMER_ID)
        .set_index(CUSTOMER_ID)[STORE_ID]
    )
    product_stats = pairs.groupby(PRODUCT_ID, sort=True).agg(
        buyers=(CUSTOMER_ID, "size"), baskets=("baskets", "sum")
    )
    product_stats["first_sold_day"] = baskets.groupby(PRODUCT_ID)[DAY].max()
    if products is not None and CATEGORY in products:
        categories = products.drop_duplicates(PRODUCT_ID).set_index(PRODUCT_ID)[CATEGORY]
        product_stats[CATEGORY] = categories.reindex(product_stats.index).fillna("").to_numpy()
    else:
        product_stats[CATEGORY] = ""
    store_products = baskets.groupby([STORE_ID, PRODUCT_ID]).size().rename("baskets").reset_index()
    return History(
        pairs=pairs,
        lines=lines,
        customers=customers.reset_index(),
        products=product_stats.reset_index(),
        store_products=store_products,
        as_of=as_of,
    )


def top_n(
    frame: pd.DataFrame, score: str, customer_ids: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """The `n` best-scored products of each customer in `frame` as padded (m, n) arrays."""
    ids = np.full((len(customer_ids), n), -1, dtype=np.int64)
    scores = np.full((len(customer_ids), n), np.nan)
    position = pd.Index(customer_ids).get_indexer(frame[CUSTOMER_ID])
    frame = frame.loc[position >= 0, [CUSTOMER_ID, PRODUCT_ID, score]].assign(
        _row=position[position >= 0]
    )
    frame = frame.sort_values(["_row", score, PRODUCT_ID], ascending=[True, False, True])
    rank = frame.groupby("_row").cumcount().to_numpy()
    kept = rank < n
    rows, ranks = frame["_row"].to_numpy()[kept], rank[kept]
    ids[rows, ranks] = frame[PRODUCT_ID].to_numpy()[kept]
    scores[rows, ranks] = frame[score].to_numpy()[kept]
    return ids, scores


def fill(first: np.ndarray, then: np.ndarray, n: int) -> np.ndarray:
    """Row by row, `first`'s products followed by those of `then` not already in, cut to n."""
    both = np.concatenate([first, then], axis=1)
    rows = np.repeat(np.arange(len(both)), both.shape[1])
    long = pd.DataFrame({"row": rows, PRODUCT_ID: both.reshape(-1)})
    long = long[long[PRODUCT_ID] >= 0].drop_duplicates()
    rank = long.groupby("row").cumcount().to_numpy()
    kept = rank < n
    ids = np.full((len(both), n), -1, dtype=np.int64)
    ids[long["row"].to_numpy()[kept], rank[kept]] = long[PRODUCT_ID].to_numpy()[kept]
    return ids


class Repurchase:
    """Personal repurchase: the customer's own products by recency-decayed basket count (the
    GP-TopFreq family; `weight="baskets"` is the undecayed count)."""

    name = "repurchase"

    def __init__(self, weight: str = "decayed"):
        if weight not in ("decayed", "baskets"):
            raise ValueError(f"weight must be 'decayed' or 'baskets', not {weight!r}")
        self.weight = weight

    def fit(self, history: History) -> Repurchase:
        self.pairs_ = history.pairs
        return self

    def candidates(self, customer_ids: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        return top_n(self.pairs_, self.weight, np.asarray(customer_ids), n)


class Popular:
    """Products bought by the most baskets overall: the non-personal baseline."""

    name = "popular"

    def fit(self, history: History) -> Popular:
        ranked = history.products.sort_values(["baskets", PRODUCT_ID], ascending=[False, True])
        self.products_ = ranked[PRODUCT_ID].to_numpy()
        self.scores_ = ranked["baskets"].to_numpy(float)
        return self

    def candidates(self, customer_ids: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        m, top = len(customer_ids), min(n, len(self.products_))
        ids = np.full((m, n), -1, dtype=np.int64)
        scores = np.full((m, n), np.nan)
        ids[:, :top], scores[:, :top] = self.products_[:top], self.scores_[:top]
        return ids, scores


class PopularInStore:
    """Products bought by the most baskets at the customer's most visited store; customers the
    history does not know get the store passed as `store_ids`, else nothing."""

    name = "popular_in_store"

    def fit(self, history: History, per_store: int = 500) -> PopularInStore:
        ranked = history.store_products.sort_values(
            [STORE_ID, "baskets", PRODUCT_ID], ascending=[True, False, True]
        )
        self.ranked_ = ranked.groupby(STORE_ID).head(per_store)
        self.home_store_ = history.customers.set_index(CUSTOMER_ID)[STORE_ID]
        return self

    def stores(self) -> np.ndarray:
        return self.ranked_[STORE_ID].unique()

    def candidates(
        self, customer_ids: np.ndarray, n: int, store_ids: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        customer_ids = np.asarray(customer_ids)
        if store_ids is None:
            store_ids = self.home_store_.reindex(customer_ids).to_numpy()
        store_ids = pd.Series(store_ids).fillna(-1).to_numpy(np.int64)
        # One row per distinct store, then fanned out to its customers.
        stores = np.unique(store_ids)
        lists = self.ranked_[self.ranked_[STORE_ID].isin(stores)].rename(
            columns={STORE_ID: CUSTOMER_ID}
        )
        ids, scores = top_n(lists, "baskets", stores, n)
        at = np.searchsorted(stores, store_ids)
        return ids[at], scores[at].astype(float)


class _ImplicitGenerator:
    """Shared plumbing of the `implicit` models: the user-item matrix and a top-n that keeps
    repeat purchases and maps indices back to ids."""

    name = "implicit"
    confidence = "baskets"

    def _model(self):
        raise NotImplementedError

    def _weights(self, history: History) -> sp.csr_matrix:
        return history.matrix(self.confidence)

    def fit(self, history: History):
        self.customer_index_ = history.customer_index
        self.product_ids_ = history.product_index.to_numpy()
        self.user_items_ = self._weights(history)
        with threadpool_limits(1, "blas"), warnings.catch_warnings():
            # BLAS threads are limited right here (implicit checks the environment instead), and
            # implicit's own BM25 weighting hands its fit a COO matrix: nothing for users to do.
            warnings.filterwarnings("ignore", message=".*OpenBLAS is configured")
            warnings.filterwarnings("ignore", message="Method expects CSR input")
            self.model_ = self._model()
            self.model_.fit(self.user_items_, show_progress=False)
        return self

    def knows(self, customer_ids: np.ndarray) -> np.ndarray:
        return self.customer_index_.get_indexer(np.asarray(customer_ids)) >= 0

    def candidates(self, customer_ids: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        rows = self.customer_index_.get_indexer(np.asarray(customer_ids))
        ids = np.full((len(rows), n), -1, dtype=np.int64)
        scores = np.full((len(rows), n), np.nan)
        known = np.flatnonzero(rows >= 0)
        if len(known) == 0:
            return ids, scores
        with threadpool_limits(1, "blas"):
            columns, values = self.model_.recommend(
                rows[known],
                self.user_items_[rows[known]],
                # implicit pads past the catalogue with index 0, not -1: never ask for more
                N=min(n, len(self.product_ids_)),
                filter_already_liked_items=False,
            )
        columns, values = np.atleast_2d(columns), np.atleast_2d(values)
        valid = (columns >= 0) & np.isfinite(values) & (values > np.finfo(np.float32).min / 2)
        width = columns.shape[1]
        ids[known[:, None], np.arange(width)] = np.where(
            valid, self.product_ids_[np.maximum(columns, 0)], -1
        )
        scores[known[:, None], np.arange(width)] = np.where(valid, values, np.nan)
        return ids, scores


class ALS(_ImplicitGenerator):
    """Implicit-feedback matrix factorisation; confidence 1 + alpha x baskets (alpha 1: larger
    alphas lose recall on Complete Journey, .058 at 1 vs .037 at 10)."""

    name = "als"

    def __init__(self, factors=64, regularization=0.05, alpha=1.0, iterations=15, seed=0):
        self.factors, self.regularization, self.alpha = factors, regularization, alpha
        self.iterations, self.seed = iterations, seed

    def _weights(self, history: History) -> sp.csr_matrix:
        weights = history.matrix()
        weights.data = 1.0 + self.alpha * weights.data
        return weights

    def _model(self):
        from implicit.cpu.als import AlternatingLeastSquares

        return AlternatingLeastSquares(
            factors=self.factors,
            regularization=self.regularization,
            iterations=self.iterations,
            random_state=self.seed,
            calculate_training_loss=False,
        )


class BPR(_ImplicitGenerator):
    """Bayesian personalised ranking: pairwise, so it ranks what a customer has not bought yet."""

    name = "bpr"

    def __init__(self, factors=64, learning_rate=0.05, regularization=0.01, iterations=50, seed=0):
        self.factors, self.learning_rate = factors, learning_rate
        self.regularization, self.iterations, self.seed = regularization, iterations, seed

    def _model(self):
        from implicit.cpu.bpr import BayesianPersonalizedRanking

        return BayesianPersonalizedRanking(
            factors=self.factors,
            learning_rate=self.learning_rate,
            regularization=self.regularization,
            iterations=self.iterations,
            random_state=self.seed,
        )


class ItemItem(_ImplicitGenerator):
    """Item-item neighbours ("often bought with"), BM25- or cosine-weighted co-purchases."""

    name = "item_item"

    def __init__(self, neighbours: int = 100, weighting: str = "bm25"):
        if weighting not in ("bm25", "cosine"):
            raise ValueError(f"weighting must be 'bm25' or 'cosine', not {weighting!r}")
        self.neighbours, self.weighting = neighbours, weighting

    def _model(self):
        from implicit.nearest_neighbours import BM25Recommender, CosineRecommender

        if self.weighting == "bm25":
            return BM25Recommender(K=self.neighbours)
        return CosineRecommender(K=self.neighbours)

    def fit(self, history: History) -> ItemItem:
        super().fit(history)
        self.leads_to_ = self.model_.similarity.T.tocsr()  # row: product, columns: its sources
        return self

    def because_of(self, customer_ids: np.ndarray, product_ids: np.ndarray) -> np.ndarray:
        """For each (customer, product) the customer's own product that contributes most to its
        score, or -1: the "often bought with" of a reason."""
        rows = self.customer_index_.get_indexer(np.asarray(customer_ids))
        cols = pd.Index(self.product_ids_).get_indexer(np.asarray(product_ids))
        found = np.full(len(rows), -1, dtype=np.int64)
        known = np.flatnonzero((rows >= 0) & (cols >= 0))
        if len(known) == 0:
            return found
        # Row i: what each bought product adds to product i's score (itself excluded).
        contribution = self.user_items_[rows[known]].multiply(self.leads_to_[cols[known]]).tocsr()
        itself = sp.csr_matrix(
            (np.ones(len(known)), (np.arange(len(known)), cols[known])), shape=contribution.shape
        )
        contribution = (contribution - contribution.multiply(itself)).tocsr()
        contribution.eliminate_zeros()
        has = np.diff(contribution.indptr) > 0
        best = np.asarray(contribution.argmax(axis=1)).ravel()
        found[known[has]] = self.product_ids_[best[has]]
        return found


class NewInCategory:
    """Products first sold within the last NEW_PRODUCT_DAYS, for customers who buy their
    category: collaborative generators cannot rank what almost nobody has bought yet."""

    name = "new_in_category"

    def fit(self, history: History, new_days: int = NEW_PRODUCT_DAYS) -> NewInCategory:
        products = history.products
        fresh = products[(products["first_sold_day"] <= new_days) & (products[CATEGORY] != "")]
        # Within a category the score orders by buyers, so no list needs more than the top few.
        fresh = (
            fresh.sort_values(["buyers", PRODUCT_ID], ascending=[False, True])
            .groupby(CATEGORY)
            .head(MAX_NEW_PER_CATEGORY)
        )
        category_of = products.set_index(PRODUCT_ID)[CATEGORY]
        affinity = (
            history.pairs.assign(
                **{CATEGORY: category_of.reindex(history.pairs[PRODUCT_ID]).to_numpy()}
            )
            .groupby([CUSTOMER_ID, CATEGORY])["decayed"]
            .sum()
            .rename("affinity")
            .reset_index()
        )
        self.affinity_ = affinity[affinity[CATEGORY].isin(fresh[CATEGORY])]
        self.fresh_ = fresh[[PRODUCT_ID, CATEGORY, "buyers"]].assign(
            rank_in_category=fresh.groupby(CATEGORY).cumcount().to_numpy()
        )
        return self

    def candidates(self, customer_ids: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        customer_ids = np.asarray(customer_ids)
        wanted = self.affinity_[self.affinity_[CUSTOMER_ID].isin(customer_ids)]
        # Within a category the new product more customers already picked up comes first, so
        # no list needs more than each category's first n.
        scored = wanted.merge(self.fresh_[self.fresh_["rank_in_category"] < n], on=CATEGORY)
        scored["score"] = scored["affinity"] * (1.0 + np.log1p(scored["buyers"]))
        return top_n(scored, "score", customer_ids, n)
