"""Evaluation metrics as pure functions of truths and predictions."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def recall_at_k(relevant: Sequence[set], recommended: Sequence[Sequence], k: int) -> float:
    """Mean over users of |top-k ∩ relevant| / |relevant|; users with nothing relevant skipped."""
    scores = [
        len(set(list(recs)[:k]) & truth) / len(truth)
        for truth, recs in zip(relevant, recommended, strict=True)
        if truth
    ]
    return float(np.mean(scores)) if scores else 0.0


def ndcg_at_k(relevant: Sequence[set], recommended: Sequence[Sequence], k: int) -> float:
    """Binary-relevance NDCG@k; the ideal ranking puts min(|relevant|, k) hits first."""
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    scores = []
    for truth, recs in zip(relevant, recommended, strict=True):
        if not truth:
            continue
        gains = np.array([item in truth for item in list(recs)[:k]], dtype=float)
        ideal = discounts[: min(len(truth), k)].sum()
        scores.append(float((gains * discounts[: len(gains)]).sum() / ideal))
    return float(np.mean(scores)) if scores else 0.0


def wape(actual: np.ndarray, forecast: np.ndarray) -> float:
    """Weighted absolute percentage error: sum |actual - forecast| / sum actual."""
    actual, forecast = np.asarray(actual, float), np.asarray(forecast, float)
    total = np.abs(actual).sum()
    if total == 0:
        raise ValueError("WAPE is undefined when every actual is zero")
    return float(np.abs(actual - forecast).sum() / total)


def bias(actual: np.ndarray, forecast: np.ndarray) -> float:
    """Over (+) or under (-) forecasting as a share of actual volume."""
    actual, forecast = np.asarray(actual, float), np.asarray(forecast, float)
    return float((forecast - actual).sum() / np.abs(actual).sum())
