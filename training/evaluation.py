"""Holdouts a reviewer can trust: models are scored only on purchases they did not see.

Two protocols for next-best-product:

- `time_split`: train on everything before T = last timestamp - 28 days; the target is the
  distinct products each customer bought in the 28 days after T.
- `next_basket`: a basket is everything a customer bought on one calendar day. The same
  single cut-off T = last timestamp - 28 days: each customer's first basket on or after T is the
  target, the baskets before T the history (customers with 3..50 baskets counting the target,
  products in at least 17 history baskets: the setting of published next-basket studies, where
  personal-frequency baselines are strong).

In both, everything a model, a baseline, a candidate generator or a feature may read is strictly
before T, for every customer: a cut-off per customer (their own last basket) would let the
generators learn from other customers' later baskets. Both give the same `Holdout`, so every
model and baseline is scored by the same code.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from features.contract import CHANNEL, CUSTOMER_ID, PRODUCT_ID, QUANTITY, TS
from training.metrics import coverage_at_k, hit_rate_at_k, map_at_k, ndcg_at_k, recall_at_k

PROTOCOLS = ("time_split", "next_basket")
TEST_DAYS = 28
MIN_BASKETS, MAX_BASKETS = 3, 50
MIN_PRODUCT_BASKETS = 17
RECALL_KS = [1, 5, 10, 20, 50]


@dataclass(frozen=True)
class Holdout:
    """Who is scored, on what, and what the models may learn from."""

    protocol: str
    history: pd.DataFrame  # the transactions models may see
    as_of: pd.Series  # customer_id -> moment of recommending (the cut-off T)
    customers: np.ndarray  # evaluated customers
    relevant: list[set]  # products each of them bought in the target
    bought_before: list[set]  # products each of them bought in the history
    catalogue: int  # products that may be recommended
    target: pd.DataFrame  # customer_id, product_id, ts of the target purchases

    @property
    def cutoff(self) -> pd.Timestamp:
        """T: the history is strictly before it, the targets on or after it."""
        return self.as_of.max()

    @property
    def window(self) -> str:
        return f"{self.history[TS].min()} .. {self.as_of.max()}"

    def split_relevant(self) -> tuple[list[set], list[set]]:
        """Relevant products split into repeats (bought before) and new to the customer."""
        pairs = list(zip(self.relevant, self.bought_before, strict=True))
        return [truth & before for truth, before in pairs], [
            truth - before for truth, before in pairs
        ]

    def subset(self, mask: np.ndarray) -> Holdout:
        """The same holdout scored on the customers where `mask` is true."""
        return replace(
            self,
            customers=self.customers[mask],
            relevant=[r for r, keep in zip(self.relevant, mask, strict=True) if keep],
            bought_before=[b for b, keep in zip(self.bought_before, mask, strict=True) if keep],
        )

    def relevant_within(self, days: int) -> list[set]:
        """What each evaluated customer bought in the first `days` days of the target."""
        ends = self.as_of.reindex(self.target[CUSTOMER_ID]).to_numpy() + np.timedelta64(days, "D")
        early = self.target[self.target[TS].to_numpy() < ends]
        truth = early.groupby(CUSTOMER_ID)[PRODUCT_ID].agg(set)
        return [truth.get(c, set()) for c in self.customers]


def _sold(transactions: pd.DataFrame) -> pd.DataFrame:
    return transactions[transactions[QUANTITY] > 0]


def _holdout(protocol, history, as_of, target, catalogue) -> Holdout:
    truth = target.groupby(CUSTOMER_ID)[PRODUCT_ID].agg(set)
    before = _sold(history).groupby(CUSTOMER_ID)[PRODUCT_ID].agg(set)
    customers = truth.index.to_numpy()
    return Holdout(
        protocol=protocol,
        history=history,
        as_of=as_of,
        customers=customers,
        relevant=truth.tolist(),
        bought_before=[before.get(c, set()) for c in customers],
        catalogue=catalogue,
        target=target[[CUSTOMER_ID, PRODUCT_ID, TS]],
    )


def time_split(transactions: pd.DataFrame, test_days: int = TEST_DAYS) -> Holdout:
    if transactions.empty:
        raise ValueError("no transactions to split")
    cutoff = transactions[TS].max() - pd.Timedelta(days=test_days)
    history = transactions[transactions[TS] < cutoff]
    target = _sold(transactions[transactions[TS] >= cutoff])
    target = target[target[CUSTOMER_ID].isin(_sold(history)[CUSTOMER_ID])]
    as_of = pd.Series(
        cutoff, index=pd.Index(_sold(history)[CUSTOMER_ID].unique(), name=CUSTOMER_ID)
    )
    catalogue = _sold(history)[PRODUCT_ID].nunique()
    return _holdout("time_split", history, as_of, target, catalogue)


def next_basket(
    transactions: pd.DataFrame,
    min_baskets: int = MIN_BASKETS,
    max_baskets: int = MAX_BASKETS,
    min_product_baskets: int = MIN_PRODUCT_BASKETS,
    test_days: int = TEST_DAYS,
) -> Holdout:
    sold = _sold(transactions)
    if sold.empty:
        raise ValueError("no purchases to build baskets from")
    cutoff = transactions[TS].max() - pd.Timedelta(days=test_days)
    before = sold[sold[TS] < cutoff]
    day = before[TS].dt.normalize()
    baskets = day.groupby(before[CUSTOMER_ID]).nunique()
    # Counting the target basket: min_baskets - 1 .. max_baskets - 1 of them before T.
    kept = baskets.index[(baskets >= min_baskets - 1) & (baskets <= max_baskets - 1)]
    history, day = before[before[CUSTOMER_ID].isin(kept)], day[before[CUSTOMER_ID].isin(kept)]
    after = sold[(sold[TS] >= cutoff) & sold[CUSTOMER_ID].isin(kept)]
    after_day = after[TS].dt.normalize()
    target = after[(after_day == after_day.groupby(after[CUSTOMER_ID]).transform("min")).to_numpy()]
    seen = history.assign(_day=day).drop_duplicates([CUSTOMER_ID, PRODUCT_ID, "_day"])
    counts = seen[PRODUCT_ID].value_counts()
    products = counts.index[counts >= min_product_baskets]
    history = history[history[PRODUCT_ID].isin(products)]
    target = target[
        target[PRODUCT_ID].isin(products) & target[CUSTOMER_ID].isin(history[CUSTOMER_ID])
    ]
    as_of = pd.Series(cutoff, index=pd.Index(history[CUSTOMER_ID].unique(), name=CUSTOMER_ID))
    return _holdout("next_basket", history, as_of, target, len(products))


def split(transactions: pd.DataFrame, protocol: str) -> Holdout:
    if protocol == "time_split":
        return time_split(transactions)
    if protocol == "next_basket":
        return next_basket(transactions)
    raise ValueError(f"protocol must be one of {PROTOCOLS}, not {protocol!r}")


def score_table_row(holdout: Holdout, recommended: np.ndarray, ks=(10, 20)) -> dict[str, float]:
    """Every metric of one model on one holdout (recommended: (customers, >= max(ks)) ids)."""
    row = {}
    repeat, new = holdout.split_relevant()
    for k in ks:
        row[f"recall_at_{k}"] = recall_at_k(holdout.relevant, recommended, k)
        row[f"ndcg_at_{k}"] = ndcg_at_k(holdout.relevant, recommended, k)
        row[f"hit_rate_at_{k}"] = hit_rate_at_k(holdout.relevant, recommended, k)
    row["map_at_10"] = map_at_k(holdout.relevant, recommended, 10)
    row["coverage_at_10"] = coverage_at_k(recommended, 10, holdout.catalogue)
    row["repeat_recall_at_10"] = recall_at_k(repeat, recommended, 10)
    row["new_recall_at_10"] = recall_at_k(new, recommended, 10)
    return row


def recall_curve(holdout: Holdout, recommended: np.ndarray, ks=RECALL_KS) -> list[float]:
    return [recall_at_k(holdout.relevant, recommended, k) for k in ks]


def segments(holdout: Holdout) -> dict[str, np.ndarray]:
    """Boolean masks over the evaluated customers: new vs returning, and main channel."""
    sold = _sold(holdout.history)
    baskets = sold.assign(_day=sold[TS].dt.normalize()).drop_duplicates([CUSTOMER_ID, "_day"])
    baskets = baskets.groupby(CUSTOMER_ID).size()
    counts = baskets.reindex(holdout.customers).fillna(0).to_numpy()
    masks = {"new (< 5 baskets)": counts < 5, "returning (>= 5 baskets)": counts >= 5}
    if CHANNEL in sold and sold[CHANNEL].nunique() > 1:
        main = sold.groupby(CUSTOMER_ID)[CHANNEL].agg(lambda c: c.value_counts().index[0])
        main = main.reindex(holdout.customers).to_numpy()
        for channel in pd.unique(main[pd.notna(main)]):
            masks[f"channel {channel}"] = main == channel
    return masks
