"""Time-based holdouts: models are scored only on periods they did not see."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.contract import CUSTOMER_ID, PRODUCT_ID, QUANTITY, TS
from training.metrics import ndcg_at_k, recall_at_k


@dataclass(frozen=True)
class TimeSplit:
    """Train on everything before `cutoff`; the test target is what each customer bought after."""

    cutoff: pd.Timestamp
    train: pd.DataFrame
    customers: np.ndarray  # bought before and after the cutoff
    relevant: list[set]  # distinct products each of them bought after the cutoff


def time_split(transactions: pd.DataFrame, test_days: int = 28) -> TimeSplit:
    cutoff = transactions[TS].max() - pd.Timedelta(days=test_days)
    train = transactions[transactions[TS] < cutoff]
    test = transactions[(transactions[TS] >= cutoff) & (transactions[QUANTITY] > 0)]
    trained = train.loc[train[QUANTITY] > 0, CUSTOMER_ID].unique()
    test = test[test[CUSTOMER_ID].isin(trained)]
    truth = test.groupby(CUSTOMER_ID)[PRODUCT_ID].agg(set)
    return TimeSplit(cutoff, train, truth.index.to_numpy(), truth.tolist())


def recommender_scores(split: TimeSplit, recommended: np.ndarray, ks=(10, 20)) -> dict[str, float]:
    scores = {}
    for k in ks:
        scores[f"recall_at_{k}"] = recall_at_k(split.relevant, recommended, k)
        scores[f"ndcg_at_{k}"] = ndcg_at_k(split.relevant, recommended, k)
    return scores


def recall_curve(split: TimeSplit, recommended: np.ndarray, ks) -> list[float]:
    return [recall_at_k(split.relevant, recommended, k) for k in ks]
