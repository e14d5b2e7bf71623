"""Order quantities from forecasts: periodic review, order-up-to level.

order = max(0, S - on_hand - on_order), where S covers the demand expected over the lead time plus
the review period, with a safety stock for the service level (normal approximation of the
forecast error over that cover, taken from the series' recent spread of demand).
"""

from __future__ import annotations

import numpy as np
from scipy.stats import norm

REVIEW_DAYS = 7


def order_quantities(
    forecast: np.ndarray,
    period_days: int,
    demand_std: np.ndarray,
    on_hand: np.ndarray,
    lead_time_days: np.ndarray,
    service_level: float,
    on_order: np.ndarray | None = None,
    review_days: int = REVIEW_DAYS,
) -> dict[str, np.ndarray]:
    """Vectorised over series.

    Args:
        forecast: (n_series, n_periods) units per period from the forecast origin on.
        period_days: length of a period in days (1 or 7).
        demand_std: (n_series,) spread of units per period.
        on_hand, lead_time_days, on_order: (n_series,) stock, supplier lead time, open orders.
        service_level: target probability of not running out before the next delivery (0.5-0.999).
    """
    forecast = np.atleast_2d(np.asarray(forecast, dtype=float))
    n_series, n_periods = forecast.shape
    cover_days = np.asarray(lead_time_days, dtype=int) + review_days
    if (cover_days > n_periods * period_days).any():
        raise ValueError(
            f"lead time + review ({cover_days.max()} days) exceeds the forecast horizon "
            f"({n_periods * period_days} days)"
        )
    daily = np.repeat(forecast / period_days, period_days, axis=1)
    expected = np.cumsum(daily, axis=1)[np.arange(n_series), cover_days - 1]
    safety = (
        norm.ppf(service_level) * np.asarray(demand_std, float) * np.sqrt(cover_days / period_days)
    )
    order_up_to = expected + np.maximum(safety, 0.0)
    position = np.asarray(on_hand, float) + (
        0.0 if on_order is None else np.asarray(on_order, float)
    )
    return {
        "expected_demand": expected,
        "order_up_to": order_up_to,
        "order_quantity": np.ceil(np.maximum(order_up_to - position, 0.0)),
    }
