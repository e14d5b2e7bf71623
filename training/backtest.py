"""Rolling-origin backtest of demand forecasts over a dense store x product panel.

The panel has one row per series and period of a regular grid (zeros included), sorted by
store_id, product_id, period, so every column reshapes to a (series x periods) array: the history
before an origin is a slice of columns, and no function here loops over series.

An origin is the first period of a test window; a forecast made at an origin sees only the
periods before it. Statistical baselines come from statsforecast, fitted per series on that
history; `score_table` scores any model's forecasts (these or the LightGBM forecaster's) the same
way, origin by origin.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from statsforecast import StatsForecast
from statsforecast.models import (
    ADIDA,
    AutoETS,
    CrostonOptimized,
    Naive,
    SeasonalNaive,
    WindowAverage,
)

from features.contract import NET_SALES, PRODUCT_ID, STORE_ID
from features.engineering import PERIOD, PERIOD_DAYS, UNITS
from features.series_selection import MIN_ACTIVE_SHARE, active_before
from training.forecast_plan import ForecastPlan
from training.forecaster import FORECAST, QUANTILES, STEP, DemandForecaster
from training.inventory import matched_baseline, order_up_to_coverage, simulate
from training.metrics import bias, coverage, pinball_loss, rmsse, wape, wrmsse
from training.promotion_breadth import PromotionBreadth
from training.restock import REVIEW_DAYS, cover_distribution, order_up_to_level, step_matrices

ORIGIN = "origin"
MODEL = "model"
WEIGHT_DAYS = 28  # M5 weighs series by their sales value over the last 28 days of history
SEASON = {"D": 7, "W": 1}  # a week of days; a year of weeks is longer than most histories
WINDOW = {"D": 28, "W": 8}  # moving average, and the history every model is given at least


def _seasonal_naive(freq: str) -> Any:
    # Weekly data would need a 52-week season, which leaves the early origins without a forecast:
    # last week's units stand in for it, under the same name so tables line up across grids.
    if freq == "W":
        return Naive(alias="seasonal_naive")
    return SeasonalNaive(season_length=SEASON[freq], alias="seasonal_naive")


STAT_MODELS: dict[str, Callable[[str], Any]] = {
    "seasonal_naive": _seasonal_naive,
    "moving_average": lambda freq: WindowAverage(window_size=WINDOW[freq], alias="moving_average"),
    "AutoETS": lambda freq: AutoETS(season_length=SEASON[freq], alias="AutoETS"),
    "CrostonOptimized": lambda freq: CrostonOptimized(alias="CrostonOptimized"),
    "ADIDA": lambda freq: ADIDA(alias="ADIDA"),
}


class _DensePanel(NamedTuple):
    keys: pd.DataFrame  # store_id, product_id per series (row of the arrays)
    grid: pd.DatetimeIndex
    units: np.ndarray  # series x periods
    net_sales: np.ndarray


def _dense(panel: pd.DataFrame, freq: str) -> _DensePanel:
    """The panel's columns as (series x periods) arrays, after checking that they reshape so."""
    grid = pd.DatetimeIndex(np.unique(panel[PERIOD]))
    n_series = panel[[STORE_ID, PRODUCT_ID]].drop_duplicates().shape[0]
    shape = (n_series, len(grid))
    step = pd.Timedelta(days=PERIOD_DAYS[freq])
    series = panel.groupby([STORE_ID, PRODUCT_ID], sort=False).ngroup().to_numpy()
    if (
        len(panel) != n_series * len(grid)
        or (grid[1:] - grid[:-1] != step).any()
        or (panel[PERIOD].to_numpy().reshape(shape) != grid.to_numpy()).any()
        or (series.reshape(shape) != series.reshape(shape)[:, :1]).any()
    ):
        raise ValueError(
            f"the panel must hold every {freq} period from {grid[0]:%Y-%m-%d} to "
            f"{grid[-1]:%Y-%m-%d} for each of its {n_series} store x product series, sorted by "
            f"{STORE_ID}, {PRODUCT_ID}, {PERIOD}; build it with features.engineering.demand_panel"
        )
    keys = panel[[STORE_ID, PRODUCT_ID]].iloc[:: len(grid)].reset_index(drop=True)
    return _DensePanel(
        keys,
        grid,
        panel[UNITS].to_numpy(float).reshape(shape),
        panel[NET_SALES].to_numpy(float).reshape(shape),
    )


def _history_length(grid: pd.DatetimeIndex, origin: pd.Timestamp, freq: str) -> int:
    """Number of grid periods before `origin`, which must be a period of the grid or the next."""
    after_grid = grid[-1] + pd.Timedelta(days=PERIOD_DAYS[freq])
    if origin not in grid and origin != after_grid:
        raise ValueError(
            f"origin {origin} is not a {freq} period of the panel ({grid[0]:%Y-%m-%d} to "
            f"{grid[-1]:%Y-%m-%d}) nor the one after it"
        )
    return int(grid.searchsorted(origin))


def _last_days_sales(net_sales: np.ndarray, history_length: int, freq: str) -> np.ndarray:
    periods = WEIGHT_DAYS // PERIOD_DAYS[freq]
    return net_sales[:, max(history_length - periods, 0) : history_length].sum(axis=1)


def rolling_origins(
    grid: pd.DatetimeIndex | np.ndarray, n_origins: int, horizon: int
) -> list[pd.Timestamp]:
    """Starts of the last `n_origins` back-to-back test windows of `horizon` periods.

    The last window ends at the grid's last period; at least `horizon` periods of history are
    kept before the first origin.
    """
    grid = pd.DatetimeIndex(grid)
    if n_origins < 1 or horizon < 1:
        raise ValueError(f"n_origins and horizon must be positive, got {n_origins} and {horizon}")
    first = len(grid) - n_origins * horizon
    if first < horizon:
        raise ValueError(
            f"{n_origins} origins x {horizon} periods, plus {horizon} periods of history, need "
            f"{(n_origins + 1) * horizon} periods but the grid has {len(grid)}: use fewer origins "
            "or a shorter horizon"
        )
    return list(grid[first::horizon])


def statistical_forecasts(
    panel: pd.DataFrame,
    origin: pd.Timestamp,
    horizon: int,
    freq: str,
    models: Sequence[str] = tuple(STAT_MODELS),
) -> pd.DataFrame:
    """Forecasts of each series for `horizon` periods from `origin`, by each statsforecast model.

    Models see the panel's periods before `origin`, which must span at least the moving average's
    window (28 days, 8 weeks) so that every model is compared on the same origins. Forecasts are
    clipped at zero: units cannot be negative, and AutoETS's trend can take them there.

    Returns:
        store_id, product_id, step (1..horizon), period, model, forecast.
    """
    unknown = sorted(set(models) - set(STAT_MODELS))
    if unknown:
        raise ValueError(f"unknown models {unknown}; choose among {list(STAT_MODELS)}")
    dense = _dense(panel, freq)
    n_history = _history_length(dense.grid, pd.Timestamp(origin), freq)
    if n_history < WINDOW[freq]:
        raise ValueError(
            f"origin {origin} leaves {n_history} periods of history; the models need at least "
            f"{WINDOW[freq]} on {freq} data: use a later origin"
        )
    n_series = len(dense.keys)
    # Integer time (the period's position) spares statsforecast any calendar-frequency inference.
    history = pd.DataFrame(
        {
            "unique_id": np.repeat(np.arange(n_series), n_history),
            "ds": np.tile(np.arange(n_history), n_series),
            "y": dense.units[:, :n_history].ravel(),
        }
    )
    fitted = StatsForecast(
        models=[STAT_MODELS[name](freq) for name in models], freq=1, n_jobs=1
    ).forecast(h=horizon, df=history)
    # statsforecast returns the series in its own order: join back by id, never by position.
    fitted = fitted.sort_values(["unique_id", "ds"], ignore_index=True)
    keys = dense.keys.iloc[fitted["unique_id"].to_numpy()].reset_index(drop=True)
    steps = fitted["ds"].to_numpy() - n_history + 1
    wide = keys.assign(
        **{
            STEP: steps,
            PERIOD: pd.Timestamp(origin) + pd.to_timedelta((steps - 1) * PERIOD_DAYS[freq], "D"),
        },
        **{name: fitted[name].clip(lower=0).to_numpy() for name in models},
    )
    return wide.melt(
        id_vars=[STORE_ID, PRODUCT_ID, STEP, PERIOD],
        value_vars=list(models),
        var_name=MODEL,
        value_name=FORECAST,
    )


def sales_weights(panel: pd.DataFrame, origin: pd.Timestamp, freq: str) -> pd.Series:
    """Net sales of each series over the 28 days before `origin` (WRMSSE's weights)."""
    dense = _dense(panel, freq)
    n_history = _history_length(dense.grid, pd.Timestamp(origin), freq)
    return pd.Series(
        _last_days_sales(dense.net_sales, n_history, freq),
        index=pd.MultiIndex.from_frame(dense.keys),
        name="weight",
    )


def _origin_scores(
    group: pd.DataFrame, dense: _DensePanel, origin: pd.Timestamp, freq: str
) -> dict[str, float]:
    """Metrics of one model's forecasts at one origin; `group` has each series' row in `dense`."""
    group = group.sort_values(["_series", STEP])
    series = group["_series"].unique()
    shape = (len(series), len(group) // len(series))
    steps = group[STEP].to_numpy()
    if len(group) != shape[0] * shape[1] or (steps.reshape(shape) != steps[: shape[1]]).any():
        raise ValueError(
            f"model {group[MODEL].iloc[0]!r} at origin {origin}: every series needs the same steps"
        )
    actual = group[UNITS].to_numpy(float)
    forecast = group[FORECAST].to_numpy(float)
    n_history = _history_length(dense.grid, origin, freq)
    history = dense.units[series, :n_history]
    per_series = rmsse(actual.reshape(shape), forecast.reshape(shape), history)
    scores = {
        "wape": wape(actual, forecast),
        "bias": bias(actual, forecast),
        "rmsse": float(np.nanmean(per_series)),
        "wrmsse": wrmsse(per_series, _last_days_sales(dense.net_sales[series], n_history, freq)),
    }
    if set(QUANTILES) <= set(group.columns) and group[list(QUANTILES)].notna().all(axis=None):
        scores["pinball"] = float(
            np.mean([pinball_loss(actual, group[col], q) for col, q in QUANTILES.items()])
        )
        scores["p90_coverage"] = coverage(actual, group["p90"])
        scores["p10_p90_coverage"] = coverage(actual, group["p90"], group["p10"])
    return scores


def score_table(scored: pd.DataFrame, panel: pd.DataFrame, freq: str) -> pd.DataFrame:
    """One row per model: its metrics at each origin, averaged over origins.

    Each origin counts once whatever its volume, so one unusual window cannot dominate. WAPE and
    bias pool every series and step of an origin; RMSSE is the mean over series with a scale
    (see `training.metrics.rmsse`), scaled by the panel's periods before that origin, and WRMSSE
    weighs them by `sales_weights`. A model with p10/p50/p90 also gets the mean pinball loss over
    the three quantiles, the share of actuals at or below p90 and the share within p10..p90; one
    without (columns absent or empty) gets NaN there.

    Args:
        scored: store_id, product_id, origin, step, period, model, forecast, units (the actual)
            and optionally p10, p50, p90.
        panel: the dense panel the actuals come from.
        freq: "D" or "W".

    Returns:
        Indexed by model: wape, bias, rmsse, wrmsse, [pinball, p90_coverage, p10_p90_coverage],
        origins (how many were averaged).
    """
    dense = _dense(panel, freq)
    series = pd.MultiIndex.from_frame(dense.keys).get_indexer(
        pd.MultiIndex.from_frame(scored[[STORE_ID, PRODUCT_ID]])
    )
    if (series < 0).any():
        missing = scored.loc[series < 0, [STORE_ID, PRODUCT_ID]].iloc[0].tolist()
        raise ValueError(f"scored series {missing} (store_id, product_id) is not in the panel")
    per_origin = pd.DataFrame(
        [
            {MODEL: model, **_origin_scores(group, dense, pd.Timestamp(origin), freq)}
            for (model, origin), group in scored.assign(_series=series).groupby(
                [MODEL, ORIGIN], sort=False
            )
        ]
    )
    table = per_origin.groupby(MODEL, sort=False).mean()
    table["origins"] = per_origin.groupby(MODEL, sort=False).size()
    return table


# ---- the forecaster on the same origins, and the restock policy it drives -------------------

FINAL = "omnishelf"


@dataclass
class Backtest:
    """Forecasts of the final model and the baselines at each origin, and the models fitted."""

    scored: pd.DataFrame  # see `score_table`
    table: pd.DataFrame  # `score_table` of `scored`
    models: dict[pd.Timestamp, DemandForecaster]  # the forecaster fitted for each origin


def backtest(
    make_forecaster: Callable[[], DemandForecaster],
    panel: pd.DataFrame,
    features: pd.DataFrame,
    freq: str,
    origins: Sequence[pd.Timestamp],
    promotions: pd.DataFrame | None = None,
    calendar: pd.DataFrame | None = None,
    stat_models: Sequence[str] = tuple(STAT_MODELS),
    progress: Callable[[str], None] | None = None,
    client=None,
    products: pd.DataFrame | None = None,
    breadth: PromotionBreadth | None = None,
    min_active_share: float = MIN_ACTIVE_SHARE,
) -> Backtest:
    """Refit the forecaster at each origin on what came before it, and score it with the
    statistical baselines on the same windows.

    Each origin forecasts and scores the series that sold in `min_active_share` of the periods
    before it (`features.series_selection`), whatever they sell in the window: a series that
    fades there is scored, one that starts there is not (the panel holds both).

    Args:
        make_forecaster: a new, unfitted forecaster (the same configuration at every origin).
        panel: the dense panel (see `score_table`), with `censored` where inventory is known.
        features: the demand features of every series, stamped at every period start that may
            serve as an origin (`event_timestamp`), as a point-in-time join returns them.
        origins: starts of the test windows, e.g. from `rolling_origins`.
        client: a `distributed.Client` to train on (see `DemandForecaster.fit`).
        products: the products table, for the forecaster's category promotion counts.
        breadth: what else is promoted, counted once for every origin's fit from the same
            `promotions` and `products` (see `DemandForecaster.promotion_breadth`); None counts
            it at each origin.
    """
    stamp = features["event_timestamp"]
    horizon = make_forecaster().horizon
    scored, models = [], {}
    panel_series = pd.MultiIndex.from_frame(panel[[STORE_ID, PRODUCT_ID]])
    feature_series = pd.MultiIndex.from_frame(features[[STORE_ID, PRODUCT_ID]])
    for origin in map(pd.Timestamp, origins):
        if progress:
            progress(f"origin {origin:%Y-%m-%d}")
        chosen = active_before(panel, origin, min_active_share)
        keys = pd.MultiIndex.from_frame(chosen[[STORE_ID, PRODUCT_ID]]).unique()
        ours, series_panel = feature_series.isin(keys), panel_series.isin(keys)
        model = make_forecaster().fit(
            features[ours & (stamp < origin)],
            panel[series_panel & (panel[PERIOD] < origin).to_numpy()],
            promotions,
            calendar,
            products,
            client,
            breadth,
        )
        models[origin] = model
        plan = ForecastPlan(promotions, calendar, model.country)
        final = model.predict(features[ours & (stamp == origin)], plan).drop(
            columns="event_timestamp"
        )
        frames = [final.assign(**{MODEL: FINAL})]
        if stat_models:
            frames.append(statistical_forecasts(chosen, origin, horizon, freq, stat_models))
        scored.append(pd.concat(frames).assign(**{ORIGIN: origin}))
    scored = pd.concat(scored, ignore_index=True).merge(
        panel[[STORE_ID, PRODUCT_ID, PERIOD, UNITS]], on=[STORE_ID, PRODUCT_ID, PERIOD]
    )
    return Backtest(scored, score_table(scored, panel, freq), models)


def cover_demand(
    result: Backtest,
    features: pd.DataFrame,
    keys: pd.DataFrame,
    review_starts: Sequence[pd.Timestamp],
    lead_time_days: np.ndarray,
    promotions: pd.DataFrame | None = None,
    calendar: pd.DataFrame | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Demand over lead time + review at each review, as the forecast made that day by the model
    of the latest origin sees it: its mean and spread, for `order_up_to_level`.

    Returns:
        (mean, std), each (len(keys), len(review_starts)), rows in the order of `keys`.
    """
    stamp = features["event_timestamp"]
    origins = pd.DatetimeIndex(sorted(result.models))
    if pd.Timestamp(min(review_starts)) < origins[0]:
        raise ValueError(f"a review before the first origin {origins[0]:%Y-%m-%d} has no model")
    means, stds = [], []
    for review in map(pd.Timestamp, review_starts):
        model = result.models[origins[origins.searchsorted(review, "right") - 1]]
        at_review = keys.merge(features[stamp == review], on=[STORE_ID, PRODUCT_ID], how="left")
        plan = ForecastPlan(promotions, calendar, model.country)
        mean, std = step_matrices(model.predict(at_review, plan), keys)
        mean, std = cover_distribution(
            mean,
            std,
            PERIOD_DAYS[model.freq],
            lead_time_days + REVIEW_DAYS,
            model.cover_variance_ratio_,
        )
        means.append(mean)
        stds.append(std)
    return np.column_stack(means), np.column_stack(stds)


def policy_order_up_to(mean: np.ndarray, std: np.ndarray, service_level: float) -> np.ndarray:
    """`order_up_to_level` of every series x review at once."""
    return order_up_to_level(mean.ravel(), std.ravel(), service_level).reshape(mean.shape)


def replay_restock(
    order_up_to: np.ndarray,
    daily_demand: np.ndarray,
    first_day: int,
    lead_time_days: np.ndarray,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The omnishelf policy and the moving-average baseline at matched average stock, replayed
    day by day on the actual demand from `first_day` on.

    Both start from the same stock, the policy's first order-up-to level, so neither begins with
    an advantage.

    Args:
        order_up_to: (n, reviews) S of the policy at each weekly review.
        daily_demand: (n, days) daily demand, history followed by the replayed days.

    Returns:
        One row per policy (with `order_up_to_coverage`, the service level it achieved); and the
        omnishelf policy's figures per series.
    """
    days = order_up_to.shape[1] * REVIEW_DAYS
    demand = daily_demand[:, first_day : first_day + days]
    start = order_up_to[:, 0]
    policy = simulate(demand, order_up_to, lead_time_days, start)
    cover, baseline = matched_baseline(
        demand, daily_demand, first_day, lead_time_days, start, policy.avg_on_hand
    )
    table = pd.DataFrame(
        [
            {"policy": FINAL, "cover_days": np.nan, **policy.as_dict()},
            {"policy": "moving_average_cover", "cover_days": cover, **baseline.as_dict()},
        ]
    ).set_index("policy")
    table["order_up_to_coverage"] = [
        order_up_to_coverage(levels, daily_demand, first_day, lead_time_days)
        for levels in (order_up_to, baseline.order_up_to)
    ]
    return table, policy.per_series
