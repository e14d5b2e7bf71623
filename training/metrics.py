"""Evaluation metrics as pure functions of truths and predictions."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _hits(relevant: Sequence[set], recommended: Sequence[Sequence], k: int):
    """Per user with something relevant: a 0/1 array over the top-k and the relevant count."""
    for truth, recs in zip(relevant, recommended, strict=True):
        if truth:
            top = [item for item in list(recs)[:k] if item is not None and item != -1]
            yield np.array([item in truth for item in top], dtype=float), len(truth)


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else 0.0


def recall_at_k(relevant: Sequence[set], recommended: Sequence[Sequence], k: int) -> float:
    """Mean over users of |top-k ∩ relevant| / |relevant|; users with nothing relevant skipped."""
    return _mean([hits.sum() / n for hits, n in _hits(relevant, recommended, k)])


def ndcg_at_k(relevant: Sequence[set], recommended: Sequence[Sequence], k: int) -> float:
    """Binary-relevance NDCG@k; the ideal ranking puts min(|relevant|, k) hits first."""
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    return _mean(
        [
            (hits * discounts[: len(hits)]).sum() / discounts[: min(n, k)].sum()
            for hits, n in _hits(relevant, recommended, k)
        ]
    )


def hit_rate_at_k(relevant: Sequence[set], recommended: Sequence[Sequence], k: int) -> float:
    """Share of users with at least one relevant product in their top-k."""
    return _mean([float(hits.any()) for hits, _ in _hits(relevant, recommended, k)])


def map_at_k(relevant: Sequence[set], recommended: Sequence[Sequence], k: int) -> float:
    """Mean average precision: precision at each hit's rank, summed, over min(|relevant|, k)."""
    ranks = np.arange(1, k + 1)
    return _mean(
        [
            (np.cumsum(hits) / ranks[: len(hits)] * hits).sum() / min(n, k)
            for hits, n in _hits(relevant, recommended, k)
        ]
    )


def coverage_at_k(recommended: Sequence[Sequence], k: int, catalogue_size: int) -> float:
    """Share of the catalogue that appears in anyone's top-k."""
    shown = {item for recs in recommended for item in list(recs)[:k] if item != -1}
    return len(shown) / catalogue_size if catalogue_size else 0.0


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
