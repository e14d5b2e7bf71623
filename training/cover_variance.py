"""How much the error of a whole restock cover exceeds the sum of its days' errors.

A forecast's errors are not independent across the days of a horizon: a series that sells above
its forecast on Monday usually does on Tuesday too (a level the features missed, a local event).
The variance of demand over a cover of d days is then larger than the sum of the d daily
variances, and an order-up-to level built from that sum runs out more often than its service
level says. The ratio of the two, measured on held-out forecasts of several origins, scales the
summed variance back up: one number per cover length, pooled over series and origins.
"""

from __future__ import annotations

import numpy as np

# Below this many held-out covers, a ratio is too noisy to trust: the summed variance stands.
MIN_COVERS = 30


def daily_cumulative(values: np.ndarray, period_days: int) -> np.ndarray:
    """(n, periods) per-period values as (n, periods * period_days) running sums over days,
    each period's value shared evenly by its days."""
    daily = np.repeat(np.asarray(values, dtype=float) / period_days, period_days, axis=1)
    return np.cumsum(daily, axis=1)


def cover_variance_ratios(error: np.ndarray, variance: np.ndarray, period_days: int) -> np.ndarray:
    """For each cover of 1 .. horizon days from the origin: the squared error summed over the
    cover, over the summed variance the forecaster expects there, pooled over forecasts.

    Args:
        error: (n, periods) actual - forecast of held-out forecasts, one row per series x
            origin, from the origin on; NaN where a period is not scored (a stockout censored
            it): a cover reaching it is left out of that cover length's ratio.
        variance: (n, periods) the error variance the forecaster gives them (its `std` squared).
        period_days: days per period (1 or 7).

    Returns:
        (periods * period_days,) ratios, at least 1: a negative correlation (rare, and mostly
        noise in retail demand) does not thin a safety stock; 1 where fewer than MIN_COVERS
        covers were held.
    """
    error, variance = np.asarray(error, dtype=float), np.asarray(variance, dtype=float)
    if error.shape != variance.shape:
        raise ValueError(f"error {error.shape} and variance {variance.shape} differ in shape")
    scored = np.isfinite(error) & np.isfinite(variance)
    # A cover counts while every period it reaches is scored.
    complete = np.repeat(np.cumsum(~scored, axis=1) == 0, period_days, axis=1)
    summed_error = daily_cumulative(np.where(scored, error, 0.0), period_days)
    summed_variance = daily_cumulative(np.where(scored, variance, 0.0), period_days)
    squared = np.where(complete, summed_error**2, 0.0).sum(axis=0)
    expected = np.where(complete, summed_variance, 0.0).sum(axis=0)
    ratio = np.divide(squared, expected, out=np.ones_like(squared), where=expected > 0)
    enough = complete.sum(axis=0) >= MIN_COVERS
    return np.where(enough, np.maximum(ratio, 1.0), 1.0)
