"""Feature tables computed from the canonical tables, stamped for point-in-time joins.

A row stamped `event_timestamp = T` uses only events before T: features of the period that ends at
T are stamped with its exclusive end. A training or serving request at time T therefore sees the
periods that ended at or before T and nothing after.

Store x product features are on the dataset's period grid (days or weeks); customer features are
weekly snapshots over windows in days, whatever the grid.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.contract import CUSTOMER_ID, ORDER_ID, PRODUCT_ID, STORE_ID, TS

EVENT_TIMESTAMP = "event_timestamp"
PERIOD = "period"
UNITS = "units"
PERIOD_DAYS = {"D": 1, "W": 7}
MIN_ACTIVE_SHARE = 0.5  # a series is forecast when it sold in at least this share of periods

STORE_PRODUCT_LAGS = (1, 2, 3, 4, 7)
STORE_PRODUCT_WINDOWS = (4, 13)  # periods
CUSTOMER_WINDOWS_DAYS = (28, 91)


def period_start(ts: pd.Series, freq: str) -> pd.Series:
    day = ts.dt.normalize()
    return day if freq == "D" else day - pd.to_timedelta(day.dt.weekday, unit="D")


def period_grid(ts: pd.Series, freq: str) -> pd.DatetimeIndex:
    """Starts of the periods the data covers completely (weeks start on Monday)."""
    first, last = ts.min().normalize(), ts.max().normalize()
    if freq == "D":
        return pd.date_range(first, last, freq="D")
    first_monday = first + pd.Timedelta(days=(7 - first.weekday()) % 7)
    return pd.date_range(first_monday, last - pd.Timedelta(days=6), freq="7D")


def demand_panel(
    tables: dict[str, pd.DataFrame], freq: str, min_active_share: float = MIN_ACTIVE_SHARE
) -> pd.DataFrame:
    """Units and sales per active store x product x period, zeros included.

    A series is active when it sold in at least `min_active_share` of the periods; sparse series
    are left to the popularity-level restock rules rather than a forecast.
    """
    sales = tables["transactions"]
    in_units = tables["products"].loc[tables["products"]["sold_in_units"], PRODUCT_ID]
    sales = sales[sales[PRODUCT_ID].isin(in_units)]
    grid = period_grid(tables["transactions"][TS], freq)
    periods = period_start(sales[TS], freq)
    inside = periods.isin(grid)
    grouped = (
        pd.DataFrame(
            {
                STORE_ID: sales[STORE_ID][inside],
                PRODUCT_ID: sales[PRODUCT_ID][inside],
                PERIOD: periods[inside],
                UNITS: sales["quantity"][inside],
                "net_sales": sales["net_sales"][inside],
            }
        )
        .groupby([STORE_ID, PRODUCT_ID, PERIOD], sort=False)
        .sum()
    )
    active_periods = (grouped[UNITS] > 0).groupby(level=[0, 1]).sum()
    active = active_periods.index[active_periods >= min_active_share * len(grid)]
    if len(active) == 0:
        raise ValueError(
            f"no store x product series sold in {min_active_share:.0%} of the {len(grid)} periods; "
            "lower min_active_share or use a coarser freq"
        )
    dense_index = pd.MultiIndex.from_arrays(
        [
            np.repeat(active.get_level_values(0), len(grid)),
            np.repeat(active.get_level_values(1), len(grid)),
            np.tile(grid, len(active)),
        ],
        names=[STORE_ID, PRODUCT_ID, PERIOD],
    )
    panel = grouped.reindex(dense_index, fill_value=0.0).reset_index()
    return panel.sort_values([STORE_ID, PRODUCT_ID, PERIOD], ignore_index=True)


def _trailing_mean(matrix: np.ndarray, window: int) -> np.ndarray:
    """Mean of the last `window` columns up to each column; NaN before enough history."""
    padded = np.concatenate([np.zeros((matrix.shape[0], 1)), np.cumsum(matrix, axis=1)], axis=1)
    out = np.full(matrix.shape, np.nan)
    out[:, window - 1 :] = (padded[:, window:] - padded[:, :-window]) / window
    return out


def store_product_features(panel: pd.DataFrame, freq: str) -> pd.DataFrame:
    """Lags, trailing means/spread and last price per series, stamped at each period's end."""
    grid = np.sort(panel[PERIOD].unique())
    n_periods = len(grid)
    keys = panel[[STORE_ID, PRODUCT_ID]].iloc[::n_periods].reset_index(drop=True)
    units = panel[UNITS].to_numpy(dtype="float64").reshape(-1, n_periods)
    sales = panel["net_sales"].to_numpy(dtype="float64").reshape(-1, n_periods)
    columns: dict[str, np.ndarray] = {}
    for lag in STORE_PRODUCT_LAGS:
        shifted = np.full(units.shape, np.nan)
        if lag <= n_periods:  # a lag longer than the data stays NaN
            shifted[:, lag - 1 :] = units[:, : n_periods - lag + 1]
        columns[f"units_lag_{lag}"] = shifted
    for window in STORE_PRODUCT_WINDOWS:
        mean = _trailing_mean(units, window)
        columns[f"units_mean_{window}"] = mean
    longest = max(STORE_PRODUCT_WINDOWS)
    square_mean = _trailing_mean(units**2, longest)
    columns[f"units_std_{longest}"] = np.sqrt(
        np.maximum(square_mean - columns[f"units_mean_{longest}"] ** 2, 0.0)
    )
    columns[f"units_nonzero_{longest}"] = _trailing_mean((units > 0).astype(float), longest)
    with np.errstate(invalid="ignore", divide="ignore"):
        price = np.where(units > 0, sales / units, np.nan)
    columns["price_last"] = pd.DataFrame(price).ffill(axis=1).to_numpy()
    stamps = grid + np.timedelta64(PERIOD_DAYS[freq], "D")
    frame = pd.DataFrame(
        {
            STORE_ID: np.repeat(keys[STORE_ID].to_numpy(), n_periods),
            PRODUCT_ID: np.repeat(keys[PRODUCT_ID].to_numpy(), n_periods),
            EVENT_TIMESTAMP: np.tile(stamps, len(keys)),
        }
    )
    for name, values in columns.items():
        frame[name] = values.reshape(-1).astype("float32")
    return frame


def customer_features(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Weekly snapshots of each customer's recent activity, from their first order on."""
    sales = tables["transactions"]
    orders = sales.groupby([CUSTOMER_ID, ORDER_ID], sort=False).agg(
        ts=(TS, "min"), net_sales=("net_sales", "sum")
    )
    orders = orders.reset_index()
    customers = np.sort(orders[CUSTOMER_ID].unique())
    first_day = orders[TS].min().normalize()
    day = ((orders[TS].dt.normalize() - first_day).dt.days).to_numpy()
    n_days = int(day.max()) + 1
    row = np.searchsorted(customers, orders[CUSTOMER_ID].to_numpy())
    daily_orders = np.zeros((len(customers), n_days))
    daily_sales = np.zeros((len(customers), n_days))
    np.add.at(daily_orders, (row, day), 1.0)
    np.add.at(daily_sales, (row, day), orders["net_sales"].to_numpy())
    # Snapshot at the end of every 7th day: the features use days [.., d] and are stamped d + 1.
    snapshot_days = np.unique(np.append(np.arange(6, n_days, 7), n_days - 1))
    columns = {}
    for window in CUSTOMER_WINDOWS_DAYS:
        columns[f"orders_{window}d"] = _trailing_sum_at(daily_orders, window, snapshot_days)
    columns["net_sales_91d"] = _trailing_sum_at(daily_sales, 91, snapshot_days)
    last_order_day = np.maximum.accumulate(
        np.where(daily_orders > 0, np.arange(n_days), -1), axis=1
    )
    last_seen = last_order_day[:, snapshot_days]
    columns["days_since_last_order"] = np.where(
        last_seen >= 0, snapshot_days[None, :] + 1 - last_seen, np.nan
    )
    stamps = first_day + pd.to_timedelta(snapshot_days + 1, unit="D")
    frame = pd.DataFrame(
        {
            CUSTOMER_ID: np.repeat(customers, len(snapshot_days)),
            EVENT_TIMESTAMP: np.tile(stamps.to_numpy(), len(customers)),
        }
    )
    for name, values in columns.items():
        frame[name] = values.reshape(-1).astype("float32")
    frame = frame[frame["days_since_last_order"].notna()]
    profile = tables["customers"][[CUSTOMER_ID, "opt_out"]].assign(
        opt_out=lambda f: f["opt_out"].astype("int64")
    )
    return frame.merge(profile, on=CUSTOMER_ID, how="left").reset_index(drop=True)


def _trailing_sum_at(daily: np.ndarray, window: int, days: np.ndarray) -> np.ndarray:
    cumulative = np.cumsum(daily, axis=1)
    before = np.where(days - window >= 0, cumulative[:, np.maximum(days - window, 0)], 0.0)
    return cumulative[:, days] - before
