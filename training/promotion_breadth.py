"""How much else is on promotion in a store around each period, as forecaster inputs.

A product's own promotion is not the whole story. A mailer that features many products lifts
each of them less than a short one, and a product sells less while its category neighbours are
on promotion. In the Complete Journey backtest (benchmarks/forecast.py), 37 % of the protocol's
series were in the mailer of one December week, whose lift was a fraction of the usual, and the
forecaster, which saw only the product's own promotion, over-forecast that week by 11 %.

Counts are of distinct products with a promotion overlapping the period, per store (by kind)
and per store and category; each is also read against the store's usual count, its mean over
the BREADTH_HISTORY_DAYS before the period, so that a big store's usual mailer reads like a
small store's. Promotions are planned ahead, so the counts of a target period are known at the
origin, like the product's own.
"""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd

from features.contract import PRODUCT_ID, STORE_ID
from features.engineering import PERIOD, PERIOD_DAYS, PROMO_KINDS

BREADTH_HISTORY_DAYS = 182
BREADTH_KINDS = ("display", "mailer")
CATEGORY = "category"


def _ragged_periods(first: np.ndarray, last: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(row, period) for every period from `first` to `last` (inclusive) of each row."""
    lengths = last - first + 1
    row = np.repeat(np.arange(len(first)), lengths)
    offset = np.arange(len(row)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return row, first[row] + offset


def _against_usual(counts: np.ndarray, history: int) -> np.ndarray:
    """(count + 1) / (mean count over the `history` periods before + 1): 1 is a usual period;
    the +1 keeps a group that rarely has promotions finite. NaN without any period before."""
    cumulative = np.concatenate([np.zeros((len(counts), 1)), np.cumsum(counts, axis=1)], axis=1)
    period = np.arange(counts.shape[1])
    start = np.maximum(period - history, 0)
    width = period - start
    usual = (cumulative[:, period] - cumulative[:, start]) / np.maximum(width, 1)
    return np.where(width > 0, (counts + 1) / (usual + 1), np.nan)


class PromotionBreadth:
    """Per store and period: products on display and in the mailer against the store's usual;
    per store, category and period: products of the category on any promotion, in count and
    against the usual. Built once from the promotions table for the periods `first` to `last`
    of the given series' stores and categories; `features` looks rows up."""

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
        self.freq, self.first = freq, pd.Timestamp(first)
        span = PERIOD_DAYS[freq]
        history = BREADTH_HISTORY_DAYS // span
        n_periods = history + (pd.Timestamp(last) - self.first).days // span + 1
        self.stores = pd.Index(np.unique(series[STORE_ID]))
        categories = (
            pd.Series(dtype=str)
            if products is None or CATEGORY not in products
            else products.set_index(PRODUCT_ID)[CATEGORY].astype(str)
        )
        # Kept for the series' products only: the model carries it.
        self.categories = categories.reindex(np.unique(series[PRODUCT_ID])).dropna()
        self.category_index = pd.Index(self.categories.unique())
        counts = {kind: np.zeros((len(self.stores), n_periods)) for kind in BREADTH_KINDS}
        by_category = np.zeros((len(self.stores) * len(self.category_index), n_periods))
        if promotions is not None and not promotions.empty:
            start = self.first - pd.Timedelta(days=history * span)
            # Arrays of the rows kept, not a filtered frame: a chain's table has tens of millions.
            kept = np.flatnonzero(
                (promotions["end_date"] >= start).to_numpy()
                & (
                    promotions["start_date"] < start + pd.Timedelta(days=n_periods * span)
                ).to_numpy()
                & promotions[STORE_ID].isin(self.stores).to_numpy()
            )
            day, start = np.timedelta64(span, "D"), start.to_datetime64()
            row, period = _ragged_periods(
                np.maximum((promotions["start_date"].to_numpy()[kept] - start) // day, 0),
                np.minimum((promotions["end_date"].to_numpy()[kept] - start) // day, n_periods - 1),
            )
            product_codes, products_seen = pd.factorize(promotions[PRODUCT_ID].to_numpy()[kept])
            store_codes = self.stores.get_indexer(promotions[STORE_ID].to_numpy()[kept])
            cell = (store_codes[row] * len(products_seen) + product_codes[row]) * n_periods + period
            # A product counts once per period, whatever number of promotions it has there:
            # each distinct store x product x period, with the kinds of promotion it had.
            codes, cells = pd.factorize(cell)
            store, rest = np.divmod(cells, len(products_seen) * n_periods)
            product, period = np.divmod(rest, n_periods)
            for kind in BREADTH_KINDS:
                # A categorical's isin compares its few categories, not every row's string.
                rows_of_kind = promotions["promo_type"].isin(PROMO_KINDS[kind]).to_numpy()[kept]
                of_kind = np.zeros(len(cells), dtype=bool)
                of_kind[codes[rows_of_kind[row]]] = True
                counts[kind] = _counts(store[of_kind], period[of_kind], counts[kind].shape)
            category = self.category_index.get_indexer(
                categories.reindex(products_seen).to_numpy()
            )[product]
            known = category >= 0
            group = store[known] * len(self.category_index) + category[known]
            by_category = _counts(group, period[known], by_category.shape)
        # float32, as the model reads them: the category arrays are stores x categories x periods.
        self.store_breadth = {
            kind: _against_usual(counts[kind], history)[:, history:].astype("float32")
            for kind in BREADTH_KINDS
        }
        self.category_count = by_category[:, history:]
        self.category_breadth = _against_usual(by_category, history)[:, history:].astype("float32")

    def since(self, first: pd.Timestamp) -> PromotionBreadth:
        """The same counts from the period starting at `first` on: what a fitted model keeps."""
        skip = max((pd.Timestamp(first) - self.first).days // PERIOD_DAYS[self.freq], 0)
        kept = copy.copy(self)
        kept.first = self.first + pd.Timedelta(days=skip * PERIOD_DAYS[self.freq])
        kept.store_breadth = {kind: array[:, skip:] for kind, array in self.store_breadth.items()}
        kept.category_count = self.category_count[:, skip:]
        kept.category_breadth = self.category_breadth[:, skip:]
        return kept

    def features(self, rows: pd.DataFrame) -> pd.DataFrame:
        """The NAMES columns for rows of store_id, product_id, period; NaN where the store, the
        product's category or the period was not built."""
        period = (rows[PERIOD] - self.first).to_numpy() // np.timedelta64(
            PERIOD_DAYS[self.freq], "D"
        )
        store = self.stores.get_indexer(rows[STORE_ID].to_numpy())
        category = self.category_index.get_indexer(
            self.categories.reindex(rows[PRODUCT_ID].to_numpy()).to_numpy()
        )
        inside = (period >= 0) & (period < self.category_count.shape[1]) & (store >= 0)
        period, store = np.where(inside, period, 0), np.where(inside, store, 0)
        group = store * len(self.category_index) + np.maximum(category, 0)
        in_category = inside & (category >= 0)
        columns = {
            f"{kind}_breadth": np.where(inside, self.store_breadth[kind][store, period], np.nan)
            for kind in BREADTH_KINDS
        }
        for name, array in (
            ("category_promotions", self.category_count),
            ("category_promotion_breadth", self.category_breadth),
        ):
            columns[name] = (
                np.where(in_category, array[group, period], np.nan)
                if array.size
                else np.full(len(rows), np.nan)
            )
        return pd.DataFrame(columns, index=rows.index)


def _counts(group: np.ndarray, period: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """How many (group, period) pairs fall in each cell of a (groups x periods) array."""
    flat = np.bincount(group * shape[1] + period, minlength=shape[0] * shape[1])
    return flat.reshape(shape).astype("float32")
