"""Evaluation metrics as pure functions of truths and predictions.

Forecast errors are utilsforecast's losses (WAPE, RMSSE, quantile loss, coverage) called on
arrays; bias (a share of volume, where utilsforecast's is in units) and WRMSSE (the M5
weighting) are ours.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from utilsforecast import losses


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


def _forecast_frame(actual: np.ndarray, **predictions: np.ndarray) -> pd.DataFrame:
    """Rows of the arrays as utilsforecast's series (`unique_id`), their columns as steps."""
    n_series, n_steps = np.atleast_2d(actual).shape
    return pd.DataFrame(
        {
            "unique_id": np.repeat(np.arange(n_series), n_steps),
            "ds": np.tile(np.arange(n_steps), n_series),
            "y": np.ravel(actual).astype(float),
            **{name: np.ravel(values).astype(float) for name, values in predictions.items()},
        }
    )


def _pooled(frame: pd.DataFrame) -> pd.DataFrame:
    """One series for all the rows: the loss pools every series and step."""
    return frame.assign(unique_id=0)


def wape(actual: np.ndarray, forecast: np.ndarray) -> float:
    """Weighted absolute percentage error: sum |actual - forecast| / sum actual."""
    if np.abs(np.asarray(actual, float)).sum() == 0:
        raise ValueError("WAPE is undefined when every actual is zero")
    frame = _pooled(_forecast_frame(actual, model=forecast))
    return float(losses.wape(frame, ["model"])["model"].item())


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
    actual, history = np.atleast_2d(actual), np.atleast_2d(history)
    if history.shape[1] < 2:
        raise ValueError(
            f"RMSSE needs at least 2 periods of history per series, got {history.shape[1]}"
        )
    scores = losses.rmsse(
        _forecast_frame(actual, model=np.atleast_2d(forecast)),
        ["model"],
        seasonality=1,
        train_df=_forecast_frame(history),
    )
    by_series = scores.set_index("unique_id")["model"].reindex(np.arange(len(actual)))
    return np.where(np.isfinite(by_series), by_series, np.nan)


def wrmsse(scores: np.ndarray, weights: np.ndarray) -> float:
    """Weighted RMSSE: sum_i w_i * rmsse_i / sum_i w_i over series with a finite RMSSE.

    `scores` are `rmsse`'s per series. The weights (in M5, each series' sales value over the last
    28 days of history) are renormalised over the scored series, so a series without a scale
    does not shrink the total. utilsforecast has no weighted RMSSE: the weighting is ours.
    """
    scores = np.asarray(scores, float)
    scored = np.isfinite(scores)
    weights = np.asarray(weights, float)[scored]
    if weights.sum() <= 0:
        raise ValueError("WRMSSE is undefined when no series with a scale has a positive weight")
    return float((weights * scores[scored]).sum() / weights.sum())


def pinball_loss(actual: np.ndarray, predicted: np.ndarray, quantile: float) -> float:
    """Mean of max(q * (actual - predicted), (q - 1) * (actual - predicted)) at quantile q."""
    frame = _pooled(_forecast_frame(np.ravel(actual), model=np.ravel(predicted)))
    return float(losses.quantile_loss(frame, {"model": "model"}, q=quantile)["model"].item())


def coverage(actual: np.ndarray, upper: np.ndarray, lower: np.ndarray | None = None) -> float:
    """Share of actuals at or below `upper` (and at or above `lower` when given)."""
    lower = np.full(np.shape(actual), -np.inf) if lower is None else lower
    bounds = {"model-lo-0": np.ravel(lower), "model-hi-0": np.ravel(upper)}
    frame = _pooled(_forecast_frame(np.ravel(actual), **bounds))
    return float(losses.coverage(frame, ["model"], level=0)["model"].item())
