"""Repurchase reminders: which of a customer's usual products are due in the coming days.

A LightGBM classifier over the customer's repeat products (bought on two or more days) learns
the probability of a purchase within `days` from the customer's own cycle with the product
(how often, how long since, how regular) and how the product is rebought by everyone. It learns
on earlier time-split holdouts and is scored on the evaluated one by precision@k.
"""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pandas as pd

from features.contract import CUSTOMER_ID, PRODUCT_ID

REMINDER_DAYS = 7
PARAMS = {
    "objective": "binary",
    "learning_rate": 0.05,
    "num_leaves": 15,
    "min_child_samples": 200,
    "verbose": -1,
    "num_threads": 2,
    "seed": 0,
}
NUM_BOOST_ROUND = 200
# Only what the customer's history says: reminders do not depend on candidate lists.
FEATURES = [
    "baskets",
    "decayed",
    "baskets_28d",
    "baskets_91d",
    "in_last_basket",
    "in_last_3_baskets",
    "in_last_10_baskets",
    "baskets_since_bought",
    "days_since_bought",
    "cycle_days",
    "due_ratio",
    "basket_share",
    "customer_baskets",
    "days_since_last_basket",
    "customer_basket_rate",
    "product_repeat_rate",
    "product_recent_buyers",
    "product_trend",
]


def repeat_rows(rows: pd.DataFrame) -> pd.DataFrame:
    return rows[rows["baskets"] >= 2]


class Reminders:
    days = REMINDER_DAYS

    def fit(self, rows: pd.DataFrame, labels: np.ndarray) -> Reminders:
        """rows: candidate rows of earlier holdouts; labels: bought within `days` after them."""
        repeat = (rows["baskets"] >= 2).to_numpy()
        data = lgb.Dataset(rows.loc[repeat, FEATURES], np.asarray(labels)[repeat])
        self.booster_ = lgb.train(PARAMS, data, num_boost_round=NUM_BOOST_ROUND)
        return self

    def probability(self, rows: pd.DataFrame) -> np.ndarray:
        return self.booster_.predict(rows[FEATURES], num_threads=PARAMS["num_threads"])

    def due(self, features, customer_ids: np.ndarray, n: int, days_later: int = 0) -> pd.DataFrame:
        """Up to n reminders per customer, most probable first, with when each is expected,
        `days_later` days after the history's moment (see `HistoryFeatures.rows`)."""
        pairs = features.pairs_
        known = pairs.index.get_level_values(CUSTOMER_ID).isin(customer_ids)
        candidates = pairs.index[known & (pairs["baskets"] >= 2).to_numpy()].to_frame(index=False)
        if candidates.empty:
            return pd.DataFrame(columns=[CUSTOMER_ID, PRODUCT_ID, "probability", "due_in_days"])
        rows = features.rows(candidates, days_later)
        rows["probability"] = self.probability(rows)
        # History day 1 is the day of recommending, so day d was d - 1 days ago.
        rows["due_in_days"] = np.maximum(0.0, rows["cycle_days"] - (rows["days_since_bought"] - 1))
        rows = rows.sort_values([CUSTOMER_ID, "probability"], ascending=[True, False])
        rows = rows[rows.groupby(CUSTOMER_ID).cumcount() < n]
        return rows[
            [
                CUSTOMER_ID,
                PRODUCT_ID,
                "probability",
                "due_in_days",
                "cycle_days",
                "days_since_bought",
            ]
        ].reset_index(drop=True)


def precision_at_k(rows: pd.DataFrame, score: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Mean over customers of the share of their k top-scored repeat products bought in the
    window (customers with fewer than k repeat products: over what they have)."""
    frame = pd.DataFrame(
        {CUSTOMER_ID: rows[CUSTOMER_ID].to_numpy(), "score": score, "label": labels}
    ).sort_values([CUSTOMER_ID, "score"], ascending=[True, False])
    top = frame[frame.groupby(CUSTOMER_ID).cumcount() < k]
    return float(top.groupby(CUSTOMER_ID)["label"].mean().mean()) if len(top) else 0.0
