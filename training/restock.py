"""Order quantities from demand forecasts: periodic review, order-up-to level ((R, S) policy).

Every `review_days` the store orders up to S, the service-level quantile of demand over the cover
(supplier lead time + review period), since an order placed now has to last until the next order
arrives. order = max(0, S - on_hand - on_order), rounded up to whole packs and to the supplier's
minimum order quantity. Everything is vectorised over series.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import gamma, norm

from features.contract import PRODUCT_ID, STORE_ID
from features.engineering import PERIOD_DAYS
from features.errors import UserInputError
from training.forecast_plan import ForecastPlan
from training.forecaster import FORECAST, STD, STEP, DemandForecaster

REVIEW_DAYS = 7
DISTRIBUTIONS = ("gamma", "normal")

# Orders are whole units; float sums such as 0.1 + 0.2 must not cost an extra pack.
ROUNDING_TOLERANCE = 1e-9


def per_series(value: float | np.ndarray, n_series: int, name: str) -> np.ndarray:
    """A scalar or (n_series,) argument as a float (n_series,) array; anything else is refused."""
    array = np.asarray(value, dtype=float)
    if array.ndim == 0:
        return np.full(n_series, float(array))
    if array.shape != (n_series,):
        raise ValueError(f"{name} has shape {array.shape}; expected a scalar or ({n_series},)")
    return array


def daily_profile(values: np.ndarray, period_days: int) -> np.ndarray:
    """Split each period evenly over its days: (n, periods) -> (n, periods * period_days)."""
    return np.repeat(np.asarray(values, dtype=float) / period_days, period_days, axis=1)


def cover_distribution(
    mean: np.ndarray,
    std: np.ndarray,
    period_days: int,
    cover_days: np.ndarray,
    variance_ratio: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of the demand over each series' first `cover_days` days.

    A period's variance is shared evenly by its days, so a cover that ends inside a period takes
    that period's variance day by day. Summed as if days were independent, then scaled by
    `variance_ratio`, what held-out covers of that length showed (`training.cover_variance`):
    errors of a series' days go together, and their sum varies more than its parts say.

    Args:
        mean, std: (n, periods) forecasts and their error standard deviation (the forecaster's
            `forecast` and `std`), units per period, from the forecast origin on.
        period_days: length of a period in days (1 for daily, 7 for weekly forecasts).
        cover_days: (n,) whole days to cover, 1 up to the horizon (periods * period_days).
        variance_ratio: (horizon days,) the ratio for each cover length (the forecaster's
            `cover_variance_ratio_`); None takes the days as independent.

    Returns:
        (mean_cover, std_cover), each (n,).
    """
    mean, std = (np.atleast_2d(np.asarray(a, dtype=float)) for a in (mean, std))
    if mean.shape != std.shape:
        raise ValueError(
            "mean and std must have the same (series, periods) shape; "
            f"got {mean.shape}, {std.shape}"
        )
    invalid = np.argwhere(~(std >= 0))
    if invalid.size:
        series, period = invalid[0]
        raise ValueError(
            f"std is negative or missing in {len(invalid)} forecast(s), first at series {series}, "
            f"period {period}; order from a forecaster fitted with quantiles"
        )
    n_series, n_periods = mean.shape
    horizon = n_periods * period_days
    cover_days = per_series(cover_days, n_series, "cover_days")
    if (cover_days != np.floor(cover_days)).any() or (cover_days < 1).any():
        raise ValueError(f"cover_days must be whole days >= 1; got {cover_days.min()}")
    if (cover_days > horizon).any():
        raise UserInputError(
            f"cover of {cover_days.max():.0f} days (lead time + review) exceeds the forecast "
            f"horizon of {horizon} days; forecast further ahead or shorten the lead time"
        )
    covered = np.arange(horizon) < cover_days[:, None]
    mean_cover = (daily_profile(mean, period_days) * covered).sum(axis=1)
    var_cover = (daily_profile(std**2, period_days) * covered).sum(axis=1)
    if variance_ratio is not None:
        var_cover = var_cover * np.asarray(variance_ratio)[cover_days.astype(int) - 1]
    return mean_cover, np.sqrt(var_cover)


def order_up_to_level(
    mean_cover: np.ndarray,
    std_cover: np.ndarray,
    service_level: float,
    distribution: str = "gamma",
) -> np.ndarray:
    """S: the `service_level` quantile of demand over the cover.

    Gamma is the default because low-volume retail demand is skewed and never negative, where a
    normal with the same spread puts stock against negative demand and too little in the tail. The
    gamma has the cover's mean and variance; with no variance S is the mean, and a mean at or below
    zero (a regression forecast can dip under it) gives S = 0.

    Args:
        mean_cover, std_cover: (n,) demand over the cover, as from `cover_distribution`.
        service_level: target chance of not running out before the next delivery, in (0.5, 0.999].
        distribution: "gamma" or "normal" (mean + z * std, floored at 0).
    """
    if not 0.5 < service_level <= 0.999:
        raise ValueError(f"service_level must be in (0.5, 0.999]; got {service_level}")
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"distribution must be one of {DISTRIBUTIONS}; got {distribution!r}")
    mean = np.asarray(mean_cover, dtype=float)
    std = np.asarray(std_cover, dtype=float)
    if distribution == "normal":
        return np.maximum(mean + norm.ppf(service_level) * std, 0.0)
    var = std**2
    skewed = (mean > 0) & (var > 0)
    shape = np.divide(mean**2, var, out=np.ones_like(mean), where=skewed)
    scale = np.divide(var, mean, out=np.ones_like(mean), where=skewed)
    return np.where(skewed, gamma.ppf(service_level, shape, scale=scale), np.maximum(mean, 0.0))


def round_to_packs(
    raw: np.ndarray,
    pack_size: float | np.ndarray | None = None,
    min_order_qty: float | np.ndarray | None = None,
) -> np.ndarray:
    """Round order quantities up to whole packs, and any positive order up to the minimum.

    An order of 0 stays 0: the minimum applies only to orders that are placed.

    Args:
        raw: (n,) units wanted, >= 0.
        pack_size: units per pack, scalar or (n,), >= 1; default 1.
        min_order_qty: supplier's minimum units per order, scalar or (n,), >= 0; default 0.
    """
    raw = np.asarray(raw, dtype=float)
    packs = per_series(1.0 if pack_size is None else pack_size, len(raw), "pack_size")
    minimum = per_series(0.0 if min_order_qty is None else min_order_qty, len(raw), "min_order_qty")
    if (packs < 1).any():
        raise ValueError(f"pack_size must be >= 1; got {packs.min()}")
    if (minimum < 0).any():
        raise ValueError(f"min_order_qty must be >= 0; got {minimum.min()}")
    order = np.ceil(raw / packs - ROUNDING_TOLERANCE) * packs
    minimum_in_packs = np.ceil(minimum / packs - ROUNDING_TOLERANCE) * packs
    return np.where(order > 0, np.maximum(order, minimum_in_packs), 0.0)


def order_quantities(
    mean: np.ndarray,
    std: np.ndarray,
    period_days: int,
    on_hand: np.ndarray,
    lead_time_days: np.ndarray,
    service_level: float,
    on_order: np.ndarray | None = None,
    review_days: int = REVIEW_DAYS,
    pack_size: np.ndarray | None = None,
    min_order_qty: np.ndarray | None = None,
    distribution: str = "gamma",
    variance_ratio: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """What to order now so stock lasts, at `service_level`, until the next order arrives.

    Args:
        mean, std: (n, periods) forecasts and their error standard deviation, units per period,
            from the forecast origin on.
        period_days: length of a period in days (1 or 7).
        on_hand, on_order: (n,) units in the store and units ordered but not yet delivered.
        lead_time_days: (n,) or scalar whole days from order to delivery (may differ by store).
        service_level: target chance of not running out before the next delivery, (0.5, 0.999].
        review_days: days between orders; the cover is lead_time_days + review_days.
        pack_size, min_order_qty: (n,) or scalar; default 1 unit per pack and no minimum.
        distribution: demand over the cover, "gamma" or "normal" (see `order_up_to_level`).
        variance_ratio: how errors add up over a cover (see `cover_distribution`).

    Returns:
        {"expected_demand": mean demand over the cover, "order_up_to": S,
        "order_quantity": whole units to order}, each (n,).
    """
    n_series = np.atleast_2d(mean).shape[0]
    on_hand = per_series(on_hand, n_series, "on_hand")
    on_order = per_series(0.0 if on_order is None else on_order, n_series, "on_order")
    lead_time_days = per_series(lead_time_days, n_series, "lead_time_days")
    for name, values in (
        ("on_hand", on_hand),
        ("on_order", on_order),
        ("lead_time_days", lead_time_days),
    ):
        if (values < 0).any():
            raise ValueError(f"{name} must be >= 0; got {values.min()}")
    mean_cover, std_cover = cover_distribution(
        mean, std, period_days, lead_time_days + review_days, variance_ratio
    )
    order_up_to = order_up_to_level(mean_cover, std_cover, service_level, distribution)
    raw = np.maximum(order_up_to - on_hand - on_order, 0.0)
    return {
        "expected_demand": mean_cover,
        "order_up_to": order_up_to,
        "order_quantity": round_to_packs(raw, pack_size, min_order_qty),
    }


ORDER_COLUMNS = [
    STORE_ID,
    PRODUCT_ID,
    "on_hand",
    "on_order",
    "lead_time_days",
    "expected_demand",
    "order_up_to",
    "order_quantity",
]


def step_matrices(
    predicted: pd.DataFrame, keys: pd.DataFrame, horizon: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The forecaster's long output as (series x step) mean and std, rows in `keys`' order;
    with `horizon`, one column per step 1..horizon (NaN where a step was not forecast)."""
    index = pd.MultiIndex.from_frame(keys[[STORE_ID, PRODUCT_ID]])
    columns = None if horizon is None else range(1, horizon + 1)
    return tuple(
        predicted.pivot_table(index=[STORE_ID, PRODUCT_ID], columns=STEP, values=name)
        .reindex(index=index, columns=columns)
        .to_numpy()
        for name in (FORECAST, STD)
    )


def plan_orders(
    forecaster: DemandForecaster,
    at_origin: pd.DataFrame,
    service_level: float,
    plan: ForecastPlan | None = None,
) -> pd.DataFrame:
    """From features to order lines in one call: forecast every series of `at_origin`, then order.

    The one path of `/restock` and `omnishelf restock`, so both give the same orders.

    Args:
        at_origin: one row per series: store_id, product_id, event_timestamp (the origin), the
            forecaster's inputs, and on_hand, on_order, lead_time_days, pack_size, min_order_qty.
        plan: the promotions and calendar known at the origin (see `DemandForecaster.predict`).

    Returns:
        ORDER_COLUMNS, one row per series in the order of `at_origin`.
    """
    period_days, horizon = PERIOD_DAYS[forecaster.freq], forecaster.horizon
    lead_time_days = at_origin["lead_time_days"].to_numpy(float)
    # Only the steps a cover reaches are forecast (a third of them at a 2-day lead time): the
    # cover multiplies the others by 0, so zeros give the same sums. Odd lead times (missing,
    # beyond the horizon) get every step and the errors order_quantities gives them.
    steps = np.ceil((lead_time_days + REVIEW_DAYS) / period_days)
    steps = np.where(np.isfinite(steps), np.clip(steps, 1, horizon), horizon)
    predicted = forecaster.predict(at_origin, plan, steps)
    beyond = np.arange(1, horizon + 1) > steps[:, None]
    mean, std = (
        np.where(beyond, 0.0, matrix)
        for matrix in step_matrices(predicted, at_origin[[STORE_ID, PRODUCT_ID]], horizon)
    )
    result = order_quantities(
        mean,
        std,
        period_days,
        on_hand=at_origin["on_hand"].to_numpy(float),
        on_order=at_origin["on_order"].to_numpy(float),
        lead_time_days=lead_time_days,
        service_level=service_level,
        pack_size=at_origin["pack_size"].to_numpy(float),
        min_order_qty=at_origin["min_order_qty"].to_numpy(float),
        variance_ratio=forecaster.cover_variance_ratio_,
    )
    orders = at_origin[ORDER_COLUMNS[:5]].reset_index(drop=True)
    for name, values in result.items():
        orders[name] = values
    return orders[ORDER_COLUMNS]
