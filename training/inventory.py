"""Replay a restock policy day by day against actual demand, to measure what it would have done.

Both the forecast-driven policy and the moving-average baseline are given as the order-up-to level
S in force at each review; `simulate` turns that into orders, deliveries, sales and lost sales.
Demand that finds the shelf empty is lost (no backorders), as in a grocery store. A fair comparison
starts both policies from the same `initial_on_hand` and compares them at matched average stock
(`matched_baseline`): any policy sells more if it is allowed to hold more.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

from training.restock import REVIEW_DAYS, per_series, round_to_packs

DAYS_PER_YEAR = 365
COVER_DAYS_GRID = np.arange(1, 43, 0.5)


@dataclass(frozen=True)
class SimulationResult:
    """What a policy did over the simulated series-days.

    Attributes:
        stockout_rate: share of series-days on which some demand went unmet.
        fill_rate: units sold / units demanded (1.0 when nothing was demanded).
        lost_units: demand that found the shelf empty.
        avg_on_hand: mean end-of-day on-hand over series-days.
        inventory_turns: annualised sales over average stock, sold * 365 / n_days /
            (avg_on_hand * n_series), i.e. how many times a year the stock is sold through
            (NaN when nothing was ever held).
        orders: number of positive orders placed.
        per_series: one row per series: stockout_days, days, sold, lost, avg_on_hand, so the
            figures can be broken down by store or category.
        order_up_to: (n, reviews) the S the policy ordered up to.
    """

    stockout_rate: float
    fill_rate: float
    lost_units: float
    avg_on_hand: float
    inventory_turns: float
    orders: int
    per_series: pd.DataFrame | None = field(default=None, repr=False, compare=False)
    order_up_to: np.ndarray | None = field(default=None, repr=False, compare=False)

    def as_dict(self) -> dict[str, float]:
        """The headline figures (not the per-series table or the S levels) as floats."""
        return {f.name: float(getattr(self, f.name)) for f in fields(self) if f.repr}


def simulate(
    demand: np.ndarray,
    order_up_to: np.ndarray,
    lead_time_days: np.ndarray,
    initial_on_hand: np.ndarray,
    review_days: int = REVIEW_DAYS,
    pack_size: np.ndarray | None = None,
    min_order_qty: np.ndarray | None = None,
) -> SimulationResult:
    """Run an (R, S) policy over `demand`, vectorised over series, one day at a time.

    Review r happens at the start of day r * review_days. Each day: deliveries due that day arrive;
    on a review day the store orders max(0, S - on_hand - on_order), rounded like
    `restock.order_quantities`, due lead_time_days later (0 means the same day, before sales);
    then it sells min(on_hand, demand) and the rest of the demand is lost.

    Args:
        demand: (n, days) units customers wanted each day.
        order_up_to: (n, ceil(days / review_days)) S in force at each review.
        lead_time_days: (n,) or scalar whole days from order to delivery.
        initial_on_hand: (n,) or scalar stock at the start of day 0; give policies being compared
            the same starting stock.
        review_days: days between reviews.
        pack_size, min_order_qty: order rounding, see `restock.round_to_packs`.
    """
    demand = np.atleast_2d(np.asarray(demand, dtype=float))
    order_up_to = np.atleast_2d(np.asarray(order_up_to, dtype=float))
    n_series, n_days = demand.shape
    n_reviews = math.ceil(n_days / review_days)
    if order_up_to.shape != (n_series, n_reviews):
        raise ValueError(
            f"order_up_to has shape {order_up_to.shape}; expected ({n_series}, {n_reviews}): "
            f"one S per series per review over {n_days} days every {review_days} days"
        )
    if (demand < 0).any():
        raise ValueError("demand must be >= 0")
    lead = per_series(lead_time_days, n_series, "lead_time_days")
    if (lead < 0).any() or (lead != np.floor(lead)).any():
        raise ValueError(f"lead_time_days must be whole days >= 0; got {lead.min()}")
    lead = lead.astype(int)
    on_hand = per_series(initial_on_hand, n_series, "initial_on_hand").copy()
    if (on_hand < 0).any():
        raise ValueError(f"initial_on_hand must be >= 0; got {on_hand.min()}")

    series = np.arange(n_series)
    due = np.zeros((n_series, n_days + lead.max() + 1))  # units arriving on each day
    on_order = np.zeros(n_series)
    orders = 0
    sold, lost, on_hand_total, stockout_days = (np.zeros(n_series) for _ in range(4))
    for day in range(n_days):
        # Ordering before today's deliveries arrive is the same as after: receiving moves units
        # from on_order to on_hand and leaves on_hand + on_order alone. It also lets a same-day
        # order (lead 0) arrive with the rest, before sales.
        if day % review_days == 0:
            wanted = order_up_to[:, day // review_days] - on_hand - on_order
            order = round_to_packs(np.maximum(wanted, 0.0), pack_size, min_order_qty)
            due[series, day + lead] += order
            on_order += order
            orders += int((order > 0).sum())
        on_hand += due[:, day]
        on_order -= due[:, day]
        sales = np.minimum(on_hand, demand[:, day])
        on_hand -= sales
        sold += sales
        lost += demand[:, day] - sales
        stockout_days += demand[:, day] > sales
        on_hand_total += on_hand

    by_series = pd.DataFrame(
        {
            "stockout_days": stockout_days,
            "days": n_days,
            "sold": sold,
            "lost": lost,
            "avg_on_hand": on_hand_total / n_days,
        }
    )
    return SimulationResult(
        **kpis(by_series), orders=orders, per_series=by_series, order_up_to=order_up_to
    )


def kpis(per_series: pd.DataFrame) -> dict[str, float]:
    """Stockout rate, fill rate, lost units, average on-hand and turns of a group of series
    (rows as in `SimulationResult.per_series`), so a breakdown sums like the whole."""
    series_days = float(per_series["days"].sum())
    sold, lost = float(per_series["sold"].sum()), float(per_series["lost"].sum())
    stock_days = float((per_series["avg_on_hand"] * per_series["days"]).sum())
    avg_on_hand = stock_days / series_days if series_days else math.nan
    return {
        "stockout_rate": float(per_series["stockout_days"].sum()) / series_days
        if series_days
        else math.nan,
        "fill_rate": sold / (sold + lost) if sold + lost > 0 else 1.0,
        "lost_units": lost,
        "avg_on_hand": avg_on_hand,
        "inventory_turns": sold * DAYS_PER_YEAR / stock_days if stock_days > 0 else math.nan,
    }


def order_up_to_coverage(
    order_up_to: np.ndarray,
    history_and_demand: np.ndarray,
    first_day: int,
    lead_time_days: np.ndarray,
    review_days: int = REVIEW_DAYS,
) -> float:
    """Share of reviews whose demand over the cover (lead time + review period from the review
    on) was at most the S set at that review.

    S is meant to be the service-level quantile of that demand, so this is the service level a
    policy achieved, to hold against the one it was set for. Reviews whose cover runs past the
    data are left out.

    Args:
        order_up_to: (n, reviews) S at each review; review r on day first_day + r * review_days.
        history_and_demand, first_day: see `moving_average_order_up_to`.
        lead_time_days: (n,) or scalar whole days from order to delivery.
    """
    order_up_to = np.atleast_2d(np.asarray(order_up_to, dtype=float))
    demand = np.atleast_2d(np.asarray(history_and_demand, dtype=float))
    n_series, n_reviews = order_up_to.shape
    lead = per_series(lead_time_days, n_series, "lead_time_days").astype(int)
    cumulative = np.concatenate([np.zeros((n_series, 1)), np.cumsum(demand, axis=1)], axis=1)
    start = np.broadcast_to(first_day + review_days * np.arange(n_reviews), (n_series, n_reviews))
    end = start + (lead + review_days)[:, None]
    inside = end <= demand.shape[1]
    if not inside.any():
        raise ValueError("no review has its whole cover inside history_and_demand")
    rows = np.arange(n_series)[:, None]
    cover_demand = cumulative[rows, np.minimum(end, demand.shape[1])] - cumulative[rows, start]
    return float((cover_demand <= order_up_to)[inside].mean())


def moving_average_order_up_to(
    history_and_demand: np.ndarray,
    first_day: int,
    days: int,
    cover_days: float,
    window: int = 28,
    review_days: int = REVIEW_DAYS,
) -> np.ndarray:
    """The baseline policy: S = cover_days * mean daily demand over the `window` days before review.

    Reviews fall on first_day + r * review_days. The window holds only days before the review, so
    the baseline never sees the demand it is ordering for; it does see true demand rather than
    sales on stockout days, a small advantage over a store that only knows what it sold.

    Args:
        history_and_demand: (n, total_days) daily demand, history followed by the simulated days.
        first_day: column of the first simulated day; at least `window` days of history before it.
        days: number of simulated days.
        cover_days: days of average demand to stock up to.

    Returns:
        (n, ceil(days / review_days)) S at each review, ready for `simulate`.
    """
    history_and_demand = np.atleast_2d(np.asarray(history_and_demand, dtype=float))
    if first_day < window:
        raise ValueError(
            f"first_day {first_day} leaves less than the {window}-day window of history"
        )
    if first_day + days > history_and_demand.shape[1]:
        raise ValueError(
            f"first_day {first_day} + {days} days runs past the "
            f"{history_and_demand.shape[1]} days in history_and_demand"
        )
    review_day = first_day + review_days * np.arange(math.ceil(days / review_days))
    # windows[:, i] holds days i .. i + window - 1, so the window ending just before d starts at
    # d - window.
    windows = sliding_window_view(history_and_demand, window, axis=1)
    return cover_days * windows[:, review_day - window].mean(axis=-1)


def matched_baseline(
    demand: np.ndarray,
    history_and_demand: np.ndarray,
    first_day: int,
    lead_time_days: np.ndarray,
    initial_on_hand: np.ndarray,
    target_avg_on_hand: float,
    cover_days_grid: np.ndarray = COVER_DAYS_GRID,
    window: int = 28,
    review_days: int = REVIEW_DAYS,
    **simulate_kwargs,
) -> tuple[float, SimulationResult]:
    """The moving-average baseline with the least cover that holds at least the target stock.

    Compare a policy with this baseline rather than with one fixed cover: holding more stock buys
    fewer stockouts, so only at matched average on-hand does a lower stockout rate show a better
    policy rather than a bigger one. Taking the smallest cover that reaches the target means the
    policy compared with it holds equal or lower stock.

    Args:
        demand: (n, days) the simulated days' demand, equal to
            history_and_demand[:, first_day:first_day + days].
        history_and_demand, first_day, window, review_days: see `moving_average_order_up_to`.
        lead_time_days, initial_on_hand, **simulate_kwargs: see `simulate`.
        target_avg_on_hand: average on-hand of the policy being compared.
        cover_days_grid: covers to try.

    Returns:
        (cover_days, result) of the smallest cover reaching the target, or of the largest cover in
        the grid if none does.
    """
    demand = np.atleast_2d(np.asarray(demand, dtype=float))
    days = demand.shape[1]
    simulated = np.asarray(history_and_demand, dtype=float)[:, first_day : first_day + days]
    if not np.array_equal(simulated, demand):
        raise ValueError(
            "demand differs from history_and_demand[:, first_day:first_day + days]; check first_day"
        )
    grid = np.sort(np.asarray(cover_days_grid, dtype=float))
    if grid.size == 0:
        raise ValueError("cover_days_grid is empty")
    for cover_days in grid:
        order_up_to = moving_average_order_up_to(
            history_and_demand, first_day, days, cover_days, window, review_days
        )
        result = simulate(
            demand, order_up_to, lead_time_days, initial_on_hand, review_days, **simulate_kwargs
        )
        if result.avg_on_hand >= target_avg_on_hand:
            return float(cover_days), result
    return float(cover_days), result
