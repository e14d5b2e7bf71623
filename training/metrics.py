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


def rmsse(actual: np.ndarray, forecast: np.ndarray, history: np.ndarray) -> np.ndarray:
    """Root mean squared scaled error per series (rows), as in the M5 competition.

    sqrt(mean_h (actual - forecast)^2 / mean_t (history_t - history_{t-1})^2): the forecast's
    squared error relative to that of a naive one-step forecast in the series' own history.
    A series whose history never changes has no scale; it gets NaN rather than an infinite or
    arbitrary score, so callers can leave it out.
    """
    actual, forecast = np.atleast_2d(actual).astype(float), np.atleast_2d(forecast).astype(float)
    history = np.atleast_2d(history).astype(float)
    if history.shape[1] < 2:
        raise ValueError(
            f"RMSSE needs at least 2 periods of history per series, got {history.shape[1]}"
        )
    scale = (np.diff(history, axis=1) ** 2).mean(axis=1)
    error = ((actual - forecast) ** 2).mean(axis=1)
    ratio = np.divide(error, scale, out=np.full_like(error, np.nan), where=scale > 0)
    return np.sqrt(ratio)


def wrmsse(
    actual: np.ndarray, forecast: np.ndarray, history: np.ndarray, weights: np.ndarray
) -> float:
    """Weighted RMSSE: sum_i w_i * rmsse_i / sum_i w_i over series with a finite RMSSE.

    The weights (in M5, each series' sales value over the last 28 days of history) are
    renormalised over the scored series, so a series without a scale does not shrink the total.
    """
    scores = rmsse(actual, forecast, history)
    scored = np.isfinite(scores)
    weights = np.asarray(weights, float)[scored]
    if weights.sum() <= 0:
        raise ValueError("WRMSSE is undefined when no series with a scale has a positive weight")
    return float((weights * scores[scored]).sum() / weights.sum())


def pinball_loss(actual: np.ndarray, predicted: np.ndarray, quantile: float) -> float:
    """Mean of max(q * (actual - predicted), (q - 1) * (actual - predicted)) at quantile q."""
    error = np.asarray(actual, float) - np.asarray(predicted, float)
    return float(np.maximum(quantile * error, (quantile - 1) * error).mean())


def coverage(actual: np.ndarray, upper: np.ndarray, lower: np.ndarray | None = None) -> float:
    """Share of actuals at or below `upper` (and at or above `lower` when given)."""
    actual = np.asarray(actual, float)
    inside = actual <= np.asarray(upper, float)
    if lower is not None:
        inside &= actual >= np.asarray(lower, float)
    return float(inside.mean())
