"""How much else is on promotion in a store around each period, as forecaster inputs.

A product's own promotion is not the whole story: a mailer that features many products may lift
each of them less than a short one, and a product may sell less while its category neighbours
are on promotion. In the Complete Journey backtest (benchmarks/forecast.py) the forecaster,
which saw only the product's own promotion, over-forecast one December week by 11 %: 37 % of
the protocol's series were in that week's mailer.

Counts are of distinct products with a promotion overlapping the period, per store (by kind)
and per store and category. Each is also read against the usual count, its mean over the
BREADTH_HISTORY_DAYS before the period that the promotions table covers, so that a big store's
usual mailer reads like a small store's. Promotions are planned ahead, so the counts of a target
period are known at the origin, like the product's own.
"""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd

from features.contract import CATEGORY, PRODUCT_ID, STORE_ID
from features.engineering import PERIOD, PERIOD_DAYS, PROMO_KINDS, ragged

BREADTH_HISTORY_DAYS = 182
BREADTH_KINDS = ("display", "mailer")
NO_CATEGORY = ("", "unknown")  # placeholders: products under them are not one category


def _usual(counts: np.ndarray, history: int, covered_from: int) -> np.ndarray:
    """Mean count over the `history` periods before each period, from `covered_from` (the first
    period the promotions table covers: before it, no promotion is not a zero) on; NaN where no
    covered period precedes."""
    cumulative = np.concatenate([np.zeros((len(counts), 1)), np.cumsum(counts, axis=1)], axis=1)
    period = np.arange(counts.shape[1])
    start = np.minimum(np.maximum(period - history, covered_from), period)
    width = period - start
    mean = (cumulative[:, period] - cumulative[:, start]) / np.maximum(width, 1)
    return np.where(width > 0, mean, np.nan).astype("float32")


class PromotionBreadth:
    """Per store and period: products on display and in the mailer, against the store's usual;
    per store, category and period: products of the category on any promotion, in count and
    against the usual. Built from the promotions table for the periods `first` to `last` of the
    given series' stores and categories; `features` looks rows up, `with_added` counts promotions
    a what-if adds."""

    NAMES = (
        *(f"{kind}_breadth" for kind in BREADTH_KINDS),
        "category_promotions",
        "category_promotion_breadth",
    )

    def __init__(
        self,
        promotions: pd.DataFrame | None,
        products: pd.DataFrame | None,
        freq: str,
        series: pd.DataFrame,
        first: pd.Timestamp,
        last: pd.Timestamp,
    ):
        """
        Args:
            promotions: the canonical promotions table (end date inclusive), or None.
            products: the canonical products table (its `category`), or None: no category counts.
            series: store_id, product_id of the series looked up later: their stores and their
                products' categories are counted, the others left out.
            first, last: starts of the first and last periods looked up later.
        """
        self.freq = freq
        self.first, self.last = pd.Timestamp(first), pd.Timestamp(last)
        span = PERIOD_DAYS[freq]
        history = BREADTH_HISTORY_DAYS // span
        # Built from `history` periods before `first`, for the usual counts; looked up from `first`.
        self.start = pd.Timestamp(first) - pd.Timedelta(days=history * span)
        self.n_periods = history + (pd.Timestamp(last) - pd.Timestamp(first)).days // span + 1
        self.stores = pd.Index(np.unique(series[STORE_ID]))
        self.products = pd.Index(np.unique(series[PRODUCT_ID]))
        known = (
            pd.Series(dtype=str)
            if products is None or CATEGORY not in products
            else products.set_index(PRODUCT_ID)[CATEGORY].dropna().astype(str)
        )
        known = known[~known.isin(NO_CATEGORY)]
        # Every product's category counts; the model carries its own products' only.
        self.categories = known.reindex(self.products).dropna()
        self.category_index = pd.Index(self.categories.unique())
        self.counts = self._count(promotions, known)
        covered_from = 0
        if promotions is not None and len(promotions):
            begins = (promotions["start_date"].min() - self.start).days // span
            covered_from = int(np.clip(begins, 0, self.n_periods))
        self.usual = {
            name: _usual(counts, history, covered_from) for name, counts in self.counts.items()
        }

    def covers(
        self, freq: str, series: pd.DataFrame, first: pd.Timestamp, last: pd.Timestamp
    ) -> bool:
        """Whether this build's rows of `series` from `first` to `last` read what a build for
        exactly those would: the same period length, the stores and products counted, the
        periods on this build's grid and inside it (a period's usual count reads only the
        periods before it). Rows of other series may read counts a narrower build lacks."""
        span = pd.Timedelta(days=PERIOD_DAYS[self.freq])
        return bool(
            freq == self.freq
            and self.first <= pd.Timestamp(first)
            and pd.Timestamp(last) <= self.last
            and (pd.Timestamp(first) - self.first) % span == pd.Timedelta(0)
            and series[STORE_ID].isin(self.stores).all()
            and series[PRODUCT_ID].isin(self.products).all()
        )

    def _count(
        self, promotions: pd.DataFrame | None, categories: pd.Series
    ) -> dict[str, np.ndarray]:
        """Distinct products with a promotion in each period: per store by kind ((stores x
        periods) arrays) and per store and category ("category": (stores * categories) x
        periods), with `categories` giving each product's."""
        shape = (len(self.stores), self.n_periods)
        counts = {kind: np.zeros(shape, "float32") for kind in BREADTH_KINDS}
        counts["category"] = np.zeros(
            (len(self.stores) * len(self.category_index), self.n_periods), "float32"
        )
        if promotions is None or promotions.empty:
            return counts
        span = np.timedelta64(PERIOD_DAYS[self.freq], "D")
        start = self.start.to_datetime64()
        # Arrays of the rows kept, not a filtered frame: a chain's table has tens of millions.
        kept = np.flatnonzero(
            (promotions["end_date"] >= self.start).to_numpy()
            & (
                promotions["start_date"] < self.start + self.n_periods * pd.Timedelta(span)
            ).to_numpy()
            & promotions[STORE_ID].isin(self.stores).to_numpy()
        )
        # Every period each promotion touches, its end date's included.
        row, period = ragged(
            np.maximum((promotions["start_date"].to_numpy()[kept] - start) // span, 0),
            np.minimum((promotions["end_date"].to_numpy()[kept] - start) // span, shape[1] - 1) + 1,
        )
        product_codes, products_seen = pd.factorize(promotions[PRODUCT_ID].to_numpy()[kept])
        store_codes = self.stores.get_indexer(promotions[STORE_ID].to_numpy()[kept])
        cell = (store_codes[row] * len(products_seen) + product_codes[row]) * shape[1] + period
        # A product counts once per period, whatever number of promotions it has there:
        # each distinct store x product x period, with the kinds of promotion it had.
        codes, cells = pd.factorize(cell)
        store, rest = np.divmod(cells, len(products_seen) * shape[1])
        product, period = np.divmod(rest, shape[1])
        for kind in BREADTH_KINDS:
            # A categorical's isin compares its few categories, not every row's string.
            rows_of_kind = promotions["promo_type"].isin(PROMO_KINDS[kind]).to_numpy()[kept]
            of_kind = np.zeros(len(cells), dtype=bool)
            of_kind[codes[rows_of_kind[row]]] = True
            counts[kind] = _cell_counts(store[of_kind], period[of_kind], shape)
        category = self.category_index.get_indexer(categories.reindex(products_seen).to_numpy())[
            product
        ]
        known = category >= 0
        group = store[known] * len(self.category_index) + category[known]
        counts["category"] = _cell_counts(group, period[known], counts["category"].shape)
        return counts

    def with_added(self, promotions: pd.DataFrame) -> PromotionBreadth:
        """The same counts plus the products of `promotions`, a what-if: they count as products
        the plan did not promote; the usual counts stay the plan's."""
        extra = self._count(promotions, self.categories)
        added = copy.copy(self)
        added.counts = {name: self.counts[name] + extra[name] for name in self.counts}
        return added

    def features(self, rows: pd.DataFrame) -> pd.DataFrame:
        """The NAMES columns for rows of store_id, product_id, period; NaN where the store, the
        product's category or the period was not built, or no usual count precedes."""
        period = (rows[PERIOD] - self.start).to_numpy() // np.timedelta64(
            PERIOD_DAYS[self.freq], "D"
        )
        store = self.stores.get_indexer(rows[STORE_ID].to_numpy())
        category = self.category_index.get_indexer(
            self.categories.reindex(rows[PRODUCT_ID].to_numpy()).to_numpy()
        )
        inside = (period >= 0) & (period < self.n_periods) & (store >= 0)
        period, store = np.where(inside, period, 0), np.where(inside, store, 0)
        group = store * len(self.category_index) + np.maximum(category, 0)
        in_category = inside & (category >= 0)

        def ratio(name: str, at: np.ndarray) -> np.ndarray:
            # +1 on both sides keeps a group that rarely has promotions finite; 1 is usual.
            return (self.counts[name][at, period] + 1) / (self.usual[name][at, period] + 1)

        columns = {
            f"{kind}_breadth": np.where(inside, ratio(kind, store), np.nan)
            for kind in BREADTH_KINDS
        }
        if len(self.category_index):
            columns["category_promotions"] = np.where(
                in_category, self.counts["category"][group, period], np.nan
            )
            columns["category_promotion_breadth"] = np.where(
                in_category, ratio("category", group), np.nan
            )
        else:
            columns["category_promotions"] = columns["category_promotion_breadth"] = np.nan
        return pd.DataFrame(columns, index=rows.index)


def _cell_counts(group: np.ndarray, period: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """How many (group, period) pairs fall in each cell of a (groups x periods) array."""
    flat = np.bincount(group * shape[1] + period, minlength=shape[0] * shape[1])
    return flat.reshape(shape).astype("float32")
