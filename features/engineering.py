"""Feature tables computed from the canonical tables, stamped for point-in-time joins.

A row stamped `event_timestamp = T` uses only events strictly before T: features of a period or
day that ends at T are stamped with its exclusive end. A training or serving request at time T
therefore sees the periods that ended at or before T and nothing after. Stamps are naive midnights.

Four tables, each with its own snapshot scheme; windows are in days whatever the grid:
- `store_product_features`: per active store x product series on the dataset's period grid (days or
  weeks): lags in periods, trailing means/spread over 7/28/91 days, price, promotions and stock.
- `customer_features`: weekly snapshots and one at the last day, from each customer's first order:
  recency, frequency, value, channel mix, top categories and the customer's own purchase cycle.
- `store_features`: one row per store per day: sales velocity, baskets, promotions and stockouts.
- `product_features`: snapshots every 28 days and at the last day: price, reach and repeat rate.

Windowed sums are prefix sums over events sorted by (entity, day), read with `searchsorted` (see
`_DaySums`), so the cost grows with the number of events and of rows out, never entities x days.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from features.contract import (
    CATEGORY,
    CHANNEL,
    CHANNELS,
    CUSTOMER_ID,
    DATE,
    DISCOUNT,
    NET_SALES,
    ORDER_ID,
    PRODUCT_ID,
    QUANTITY,
    STORE_ID,
    TS,
)
from features.series_selection import MIN_ACTIVE_SHARE, PERIOD, UNITS, active_before_any

EVENT_TIMESTAMP = "event_timestamp"
PERIOD_DAYS = {"D": 1, "W": 7}

STORE_PRODUCT_LAGS = (1, 2, 3, 4, 5, 6, 7, 8)  # periods
STORE_PRODUCT_WINDOWS_DAYS = (7, 28, 56, 91, 182)  # mean and spread over each
NONZERO_WINDOWS_DAYS = (91, 182)  # share of periods with sales
TREND_WINDOWS_DAYS = (28, 182)  # recent vs long level of a product (all stores) and of a store
PROMO_WINDOW_DAYS = 28
PROMO_HISTORY_DAYS = 182
PROMO_KINDS = {  # promotion kind -> the promo_type values that count for it
    "display": ("display", "display_mailer"),
    "mailer": ("mailer", "display_mailer"),
    "price_cut": ("price_cut",),
}
CUSTOMER_WINDOWS_DAYS = (7, 28, 91)
CUSTOMER_SNAPSHOT_DAYS = 7
MIX_WINDOW_DAYS = 91  # channel shares and top categories
TOP_CATEGORIES = 3
STORE_WINDOW_DAYS = 28
PRODUCT_WINDOW_DAYS = 91
PRODUCT_SNAPSHOT_DAYS = 28


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
    tables: dict[str, pd.DataFrame],
    freq: str,
    min_active_share: float = MIN_ACTIVE_SHARE,
    selected_before: pd.Timestamp | Sequence[pd.Timestamp] | None = None,
    kept: pd.MultiIndex | None = None,
) -> pd.DataFrame:
    """Units and sales per active store x product x period, zeros included, over the whole grid.

    A series is active when it sold in at least `min_active_share` of the periods strictly
    before `selected_before` (of all periods when None); given several moments (a backtest's
    origins), the series active before any of them. Sparse series are left to the
    popularity-level restock rules rather than a forecast. `kept` (store x product) series stay
    in whatever their activity: a feature table that already covers them only grows by days.
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
    moments = (
        [selected_before]
        if selected_before is None or isinstance(selected_before, pd.Timestamp)
        else list(selected_before)
    )
    active = active_before_any(grouped[UNITS], grid, moments, min_active_share)
    if kept is not None:
        active = active.union(kept.set_names(active.names), sort=False)
    if len(active) == 0:
        before = "" if selected_before is None else " before the selection moment"
        raise ValueError(
            f"no store x product series sold in {min_active_share:.0%} of the periods{before}; "
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
    panel = panel.sort_values([STORE_ID, PRODUCT_ID, PERIOD], ignore_index=True)
    if tables.get("inventory") is not None and not tables["inventory"].empty:
        panel["censored"] = _censored(panel, tables, freq)
    return panel


def sold_out_days(stock: pd.DataFrame, transactions: pd.DataFrame) -> pd.DataFrame:
    """The stock snapshots (store, product, date, on_hand at the start of the day) with the
    units `sold` that day and `sold_out`: the day's sales reached the stock it started with, so
    demand may have been higher than the sales."""
    sold = (
        transactions.assign(**{DATE: transactions[TS].dt.normalize()})
        .groupby([STORE_ID, PRODUCT_ID, DATE])["quantity"]
        .sum()
    )
    day_keys = pd.MultiIndex.from_frame(stock[[STORE_ID, PRODUCT_ID, DATE]])
    sold_that_day = sold.reindex(day_keys, fill_value=0.0).to_numpy()
    return stock.assign(sold=sold_that_day, sold_out=sold_that_day >= stock["on_hand"].to_numpy())


def _censored(panel: pd.DataFrame, tables: dict[str, pd.DataFrame], freq: str) -> np.ndarray:
    """Periods with a sold-out day (`sold_out_days`). Days without a stock snapshot count as
    known."""
    days = sold_out_days(tables["inventory"], tables["transactions"])
    sold_out = days.loc[days["sold_out"], [STORE_ID, PRODUCT_ID]]
    sold_out = sold_out.assign(**{PERIOD: period_start(days.loc[sold_out.index, DATE], freq)})
    flagged = pd.MultiIndex.from_frame(sold_out).unique()
    return pd.MultiIndex.from_frame(panel[[STORE_ID, PRODUCT_ID, PERIOD]]).isin(flagged)


def daily_demand(
    tables: dict[str, pd.DataFrame], keys: pd.DataFrame, first: pd.Timestamp, days: int
) -> np.ndarray:
    """Units wanted per series (rows of `keys`) and day from `first`: the generator's true demand
    where the dataset has it, else units sold (demand and sales coincide without stockouts)."""
    if "true_demand" in tables:
        frame = tables["true_demand"].rename(columns={"demand": UNITS})
    else:
        sales = tables["transactions"]
        frame = pd.DataFrame(
            {
                STORE_ID: sales[STORE_ID],
                PRODUCT_ID: sales[PRODUCT_ID],
                DATE: sales[TS].dt.normalize(),
                UNITS: sales["quantity"],
            }
        )
    day = _day_index(frame[DATE], first)
    row = _series_rows(keys, frame)
    kept = (row >= 0) & (day >= 0) & (day < days)
    out = np.bincount(
        row[kept] * days + day[kept],
        weights=frame[UNITS].to_numpy(dtype="float64")[kept],
        minlength=len(keys) * days,
    )
    return out.reshape(len(keys), days)


# ---- helpers --------------------------------------------------------------------------------


class _DaySums:
    """Sums of event weights per group over day ranges, from prefix sums of the sorted events.

    Events are (group, day) pairs with named weights; `between` answers any number of
    (group, start, end) queries at once, counting the events with start <= day < end.
    """

    def __init__(self, group: np.ndarray, day: np.ndarray, **weights: np.ndarray):
        group, day = np.asarray(group, dtype="int64"), np.asarray(day, dtype="int64")
        self._first = int(day.min()) if len(day) else 0
        self._span = int(day.max()) - self._first + 2 if len(day) else 1
        code = group * self._span + (day - self._first)
        order = np.argsort(code, kind="stable")
        self._code = code[order]
        self._cum = {
            name: np.concatenate([[0.0], np.cumsum(np.asarray(w, dtype="float64")[order])])
            for name, w in weights.items()
        }

    def _position(self, group: np.ndarray, day: np.ndarray) -> np.ndarray:
        offset = np.clip(np.asarray(day, dtype="int64") - self._first, 0, self._span - 1)
        return np.searchsorted(self._code, np.asarray(group, dtype="int64") * self._span + offset)

    def between(
        self, name: str, group: np.ndarray, start: np.ndarray | None, end: np.ndarray
    ) -> np.ndarray:
        """Weight `name` of each group's events on days [start, end); all history if no start."""
        cum = self._cum[name]
        low = self._position(group, np.full(len(group), self._first) if start is None else start)
        return cum[self._position(group, end)] - cum[low]


def ragged(starts: np.ndarray, stops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(owner, value) pairs for value in range(starts[i], stops[i]) of every owner i, flattened."""
    counts = np.maximum(np.asarray(stops) - np.asarray(starts), 0)
    owner = np.repeat(np.arange(len(counts)), counts)
    first_of_owner = np.repeat(np.cumsum(counts) - counts, counts)
    return owner, np.arange(counts.sum()) - first_of_owner + np.asarray(starts)[owner]


def _day_index(stamps: pd.Series, origin: pd.Timestamp) -> np.ndarray:
    """Whole days from `origin` (a midnight) to each stamp's day."""
    days = stamps.to_numpy(dtype="datetime64[ns]").astype("datetime64[D]")
    return (days - origin.to_datetime64().astype("datetime64[D]")).astype("int64")


def _distinct(values: np.ndarray) -> np.ndarray:
    """Sorted distinct values; by sorting, as plain np.unique (hash-based in numpy 2.4) is slow."""
    ordered = np.sort(values)
    return ordered[np.concatenate([[True], ordered[1:] != ordered[:-1]])]


def _snapshot_ends(n_days: int, step: int) -> np.ndarray:
    """Exclusive ends (in days) of the snapshot windows: every `step` days and the last day."""
    return _distinct(np.append(np.arange(step, n_days + 1, step), n_days))


def _in_windows(day: np.ndarray, ends: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """(event, snapshot) pairs for the snapshots whose window [end - window, end) holds the day."""
    first = np.searchsorted(ends, day, side="right")
    last = np.searchsorted(ends, day + window, side="right")
    return ragged(first, last)


def _first_per_group(group: np.ndarray, day: np.ndarray, n_groups: int) -> np.ndarray:
    first = np.full(n_groups, np.iinfo("int64").max)
    np.minimum.at(first, group, day)
    return first


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, NaN where the denominator is 0."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, numerator / denominator, np.nan)


def _float_columns(frame: pd.DataFrame, columns: dict[str, np.ndarray]) -> pd.DataFrame:
    for name, values in columns.items():
        frame[name] = np.asarray(values).reshape(-1).astype("float32")
    return frame


def _lookup(keys: pd.Series, values: np.ndarray, query: np.ndarray, missing: object) -> np.ndarray:
    """values[i] where keys[i] == query, `missing` for queries not among the keys."""
    index = pd.Index(keys).get_indexer(query)
    out = np.asarray(values)[np.maximum(index, 0)]
    if (index < 0).any():
        out = out.astype(object if isinstance(missing, str) else np.result_type(out, missing))
        out[index < 0] = missing
    return out


# ---- store x product ------------------------------------------------------------------------


def _trailing_mean(matrix: np.ndarray, window: int) -> np.ndarray:
    """Mean of the last `window` columns up to each column; NaN before enough history."""
    padded = np.concatenate([np.zeros((matrix.shape[0], 1)), np.cumsum(matrix, axis=1)], axis=1)
    out = np.full(matrix.shape, np.nan)
    out[:, window - 1 :] = (padded[:, window:] - padded[:, :-window]) / window
    return out


def store_product_features(
    panel: pd.DataFrame, freq: str, tables: dict[str, pd.DataFrame] | None = None
) -> pd.DataFrame:
    """Lags, trailing means/spread, last price, promotions and stock per series, per period.

    Args:
        panel: the dense panel of `demand_panel`, sorted by store, product and period.
        freq: its grid, "D" or "W"; windows in days cover days // PERIOD_DAYS[freq] periods.
        tables: the canonical tables, for `promotions` and `inventory` when they are present.

    Returns:
        One row per series and period, stamped at the period's exclusive end.
    """
    grid = np.sort(panel[PERIOD].unique())
    n_periods, period_days = len(grid), PERIOD_DAYS[freq]
    keys = panel[[STORE_ID, PRODUCT_ID]].iloc[::n_periods].reset_index(drop=True)
    units = panel[UNITS].to_numpy(dtype="float64").reshape(-1, n_periods)
    sales = panel["net_sales"].to_numpy(dtype="float64").reshape(-1, n_periods)
    columns: dict[str, np.ndarray] = {}
    for lag in STORE_PRODUCT_LAGS:
        shifted = np.full(units.shape, np.nan)
        if lag <= n_periods:  # a lag longer than the data stays NaN
            shifted[:, lag - 1 :] = units[:, : n_periods - lag + 1]
        columns[f"units_lag_{lag}"] = shifted
    # On a weekly grid the 7-day window is one period: its spread is 0 by construction.
    for days in STORE_PRODUCT_WINDOWS_DAYS:
        mean = _trailing_mean(units, days // period_days)
        square_mean = _trailing_mean(units**2, days // period_days)
        columns[f"units_mean_{days}d"] = mean
        columns[f"units_std_{days}d"] = np.sqrt(np.maximum(square_mean - mean**2, 0.0))
    for days in NONZERO_WINDOWS_DAYS:
        columns[f"units_nonzero_{days}d"] = _trailing_mean(
            (units > 0).astype(float), days // period_days
        )
    # Since the first period of the data: the steadiest level of a slow seller.
    elapsed = np.arange(1, n_periods + 1)
    columns["units_mean_all"] = np.cumsum(units, axis=1) / elapsed
    columns["units_nonzero_all"] = np.cumsum(units > 0, axis=1) / elapsed
    columns["periods_since_sale"] = _periods_since_sale(units)
    recent, long = (days // period_days for days in TREND_WINDOWS_DAYS)
    for level, codes in (("product", keys[PRODUCT_ID]), ("store", keys[STORE_ID])):
        # Summed over the level's series, so one product's trend is seen at every store.
        totals = pd.DataFrame(units).groupby(pd.factorize(codes)[0]).transform("sum").to_numpy()
        columns[f"{level}_trend"] = _ratio(
            _trailing_mean(totals, recent), _trailing_mean(totals, long)
        )
    columns["price_last"] = pd.DataFrame(_ratio(sales, units)).ffill(axis=1).to_numpy()
    tables = tables or {}
    promotions = tables.get("promotions")
    promo_share, on_promo = _promotion_days(keys, grid, period_days, promotions)
    columns["promo_share_28d"], columns["on_promo_last"] = promo_share, on_promo
    # How often the series is put on display or in the mailer: how much a planned one means.
    for kind, types in PROMO_KINDS.items():
        of_kind = None if promotions is None else promotions[promotions["promo_type"].isin(types)]
        columns[f"{kind}_share_{PROMO_HISTORY_DAYS}d"] = _promotion_days(
            keys, grid, period_days, of_kind, PROMO_HISTORY_DAYS
        )[0]
    columns["on_hand_last"] = _on_hand_last(keys, grid, period_days, tables.get("inventory"))
    daily_rate = columns["units_mean_28d"] / period_days
    columns["days_of_cover"] = _ratio(columns["on_hand_last"], daily_rate)
    stamps = grid + np.timedelta64(period_days, "D")
    frame = pd.DataFrame(
        {
            STORE_ID: np.repeat(keys[STORE_ID].to_numpy(), n_periods),
            PRODUCT_ID: np.repeat(keys[PRODUCT_ID].to_numpy(), n_periods),
            EVENT_TIMESTAMP: np.tile(stamps, len(keys)),
        }
    )
    return _float_columns(frame, columns)


def _periods_since_sale(units: np.ndarray) -> np.ndarray:
    """Periods from the last period with sales up to each stamp (1 = sold in the period just
    ended); NaN before the first sale."""
    index = np.arange(units.shape[1], dtype="float64")
    last_sale = np.fmax.accumulate(np.where(units > 0, index, np.nan), axis=1)
    return index + 1 - last_sale


def _series_rows(keys: pd.DataFrame, frame: pd.DataFrame) -> np.ndarray:
    """Row in `keys` of each store x product of `frame`, -1 for the others."""
    series = pd.MultiIndex.from_frame(keys[[STORE_ID, PRODUCT_ID]])
    return series.get_indexer(pd.MultiIndex.from_frame(frame[[STORE_ID, PRODUCT_ID]]))


def _promotion_days(
    keys: pd.DataFrame,
    grid: np.ndarray,
    period_days: int,
    promotions: pd.DataFrame | None,
    window: int = PROMO_WINDOW_DAYS,
) -> tuple[np.ndarray, np.ndarray]:
    """Share of the `window` days before each stamp under a promotion, and promotion on the last
    day."""
    shape = (len(keys), len(grid))
    if promotions is None or promotions.empty:
        return np.zeros(shape), np.zeros(shape)
    # Days from the first window's start to the last period's last day: series x days on/off.
    origin = pd.Timestamp(grid[0]) + pd.Timedelta(days=period_days - window)
    n_days = int((grid[-1] - grid[0]) // np.timedelta64(1, "D")) + window
    promotions = promotions[promotions[PRODUCT_ID].isin(keys[PRODUCT_ID].unique())]
    start = _day_index(promotions["start_date"], origin)
    end = _day_index(promotions["end_date"], origin) + 1  # exclusive
    overlaps = (end > 0) & (start < n_days)
    row = _series_rows(keys, promotions[overlaps])
    ours = row >= 0
    row = row[ours]
    start = np.clip(start[overlaps][ours], 0, n_days)
    end = np.clip(end[overlaps][ours], 0, n_days)
    width = n_days + 1
    starts = np.bincount(row * width + start, minlength=len(keys) * width)
    ends = np.bincount(row * width + end, minlength=len(keys) * width)
    running = np.cumsum((starts - ends).reshape(len(keys), width), axis=1, dtype="int32")
    active = running[:, :n_days] > 0  # overlapping promotions count a day once
    cumulative = np.zeros((len(keys), n_days + 1), dtype="int32")
    np.cumsum(active, axis=1, out=cumulative[:, 1:])
    stamp = window + np.arange(len(grid)) * period_days  # index of each stamp's day
    share = (cumulative[:, stamp] - cumulative[:, stamp - window]) / window
    return share, active[:, stamp - 1].astype("float64")


def _on_hand_last(
    keys: pd.DataFrame, grid: np.ndarray, period_days: int, inventory: pd.DataFrame | None
) -> np.ndarray:
    """On hand at the start of each period's last day; NaN without a snapshot that day."""
    out = np.full((len(keys), len(grid)), np.nan)
    if inventory is None or inventory.empty:
        return out
    inventory = inventory[inventory[PRODUCT_ID].isin(keys[PRODUCT_ID].unique())]
    first_last_day = pd.Timestamp(grid[0]) + pd.Timedelta(days=period_days - 1)
    day = _day_index(inventory[DATE], first_last_day)
    period, offset = np.divmod(day, period_days)
    row = _series_rows(keys, inventory)
    kept = (row >= 0) & (offset == 0) & (period >= 0) & (period < len(grid))
    out[row[kept], period[kept]] = inventory["on_hand"].to_numpy(dtype="float64")[kept]
    return out


# ---- customers ------------------------------------------------------------------------------


def customer_features(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Weekly snapshots (and one at the last day) of each customer, from their first order on.

    Orders are distinct (customer, order) pairs, dated by their first line and placed in the
    channel of that line. The purchase cycle is over the gaps between distinct order days of all
    history before the stamp; `churn_risk` above 1 means the customer is later than usual.
    """
    sales = tables["transactions"]
    origin = sales[TS].min().normalize()
    orders = (
        pd.DataFrame(
            {
                CUSTOMER_ID: sales[CUSTOMER_ID],
                ORDER_ID: sales[ORDER_ID],
                TS: sales[TS],
                NET_SALES: sales[NET_SALES],
                CHANNEL: sales[CHANNEL],
            }
        )
        .sort_values(TS, kind="stable")
        .groupby([CUSTOMER_ID, ORDER_ID], sort=False)
        .agg(ts=(TS, "first"), net_sales=(NET_SALES, "sum"), channel=(CHANNEL, "first"))
        .reset_index()
    )
    customers, row = np.unique(orders[CUSTOMER_ID].to_numpy(), return_inverse=True)
    day = _day_index(orders[TS], origin)
    n_days = int(_day_index(sales[TS], origin).max()) + 1
    ends = _snapshot_ends(n_days, CUSTOMER_SNAPSHOT_DAYS)
    first_day = _first_per_group(row, day, len(customers))
    owner, snapshot = ragged(np.searchsorted(ends, first_day, side="right"), len(ends))
    end = ends[snapshot]

    channel = orders[CHANNEL].to_numpy()
    order_sums = _DaySums(
        row,
        day,
        orders=np.ones(len(day)),
        net_sales=orders[NET_SALES].to_numpy(),
        **{name: channel == name for name in CHANNELS},
    )
    columns: dict[str, np.ndarray] = {}
    for window in CUSTOMER_WINDOWS_DAYS:
        columns[f"orders_{window}d"] = order_sums.between("orders", owner, end - window, end)
    for window in CUSTOMER_WINDOWS_DAYS:
        columns[f"net_sales_{window}d"] = order_sums.between("net_sales", owner, end - window, end)

    # Distinct order days with the gap since the customer's previous one (0 for the first).
    codes = _distinct(row.astype("int64") * (n_days + 1) + day)
    day_row, order_day = np.divmod(codes, n_days + 1)
    same = np.concatenate([[False], day_row[1:] == day_row[:-1]])
    gap = np.where(same, order_day - np.roll(order_day, 1), 0).astype("float64")
    cycle = _DaySums(day_row, order_day, days=np.ones(len(gap)), gap=gap, gap_sq=gap**2)
    n_order_days = cycle.between("days", owner, None, end)
    gap_sum = cycle.between("gap", owner, None, end)
    last_order_day = first_day[owner] + gap_sum
    columns["days_since_last_order"] = end - last_order_day

    window = MIX_WINDOW_DAYS
    orders_in_window = columns[f"orders_{window}d"]
    for name in CHANNELS:
        in_channel = order_sums.between(name, owner, end - window, end)
        columns[f"share_{name}_{window}d"] = _ratio(in_channel, orders_in_window)

    gaps = n_order_days - 1
    mean_gap = _ratio(gap_sum, gaps)
    square_mean = _ratio(cycle.between("gap_sq", owner, None, end), gaps)
    columns["mean_days_between_orders"] = mean_gap
    columns["std_days_between_orders"] = np.where(
        gaps >= 2, np.sqrt(np.maximum(square_mean - mean_gap**2, 0.0)), np.nan
    )
    columns["churn_risk"] = _ratio(columns["days_since_last_order"], mean_gap)

    frame = pd.DataFrame(
        {CUSTOMER_ID: customers[owner], EVENT_TIMESTAMP: origin + pd.to_timedelta(end, unit="D")}
    )
    frame = _float_columns(frame, columns)
    top = _top_categories(tables, sales, origin, customers, ends, owner * len(ends) + snapshot)
    frame.insert(frame.columns.get_loc("mean_days_between_orders"), "top_categories", top)
    profile = tables["customers"]
    frame["opt_out"] = _lookup(
        profile[CUSTOMER_ID], profile["opt_out"].to_numpy(), frame[CUSTOMER_ID].to_numpy(), False
    ).astype("int64")
    return frame


def _top_categories(
    tables: dict[str, pd.DataFrame],
    sales: pd.DataFrame,
    origin: pd.Timestamp,
    customers: np.ndarray,
    ends: np.ndarray,
    row_key: np.ndarray,
) -> np.ndarray:
    """The customer's most-bought categories (by lines) in the window before each snapshot.

    `row_key` is customer row x len(ends) + snapshot of each output row. Categories without a
    name are left out; ties go to the first name in alphabetical order.
    """
    products = tables["products"]
    names, category = np.unique(products[CATEGORY].astype(str).to_numpy(), return_inverse=True)
    line_category = _lookup(products[PRODUCT_ID], category, sales[PRODUCT_ID].to_numpy(), -1)
    named = (line_category >= 0) & (names[np.maximum(line_category, 0)] != "")
    customer = np.searchsorted(customers, sales[CUSTOMER_ID].to_numpy()[named])
    day = _day_index(sales[TS], origin)[named]
    # Lines per customer x category x day, summed over the window of every snapshot that holds
    # one of those days (each customer x category x snapshot once).
    n_names, span = len(names), int(day.max()) + 1 if len(day) else 1
    code, lines = np.unique(
        (customer * n_names + line_category[named]) * span + day, return_counts=True
    )
    pair, day = np.divmod(code, span)
    first = np.searchsorted(ends, day, side="right")
    last = np.searchsorted(ends, day + MIX_WINDOW_DAYS, side="right")
    same_pair = np.concatenate([[False], pair[1:] == pair[:-1]])
    event, snapshot = ragged(np.where(same_pair, np.maximum(first, np.roll(last, 1)), first), last)
    sums, wanted, end = _DaySums(pair, day, lines=lines), pair[event], ends[snapshot]
    counts = sums.between("lines", wanted, end - MIX_WINDOW_DAYS, end)
    key, chosen = (wanted // n_names) * len(ends) + snapshot, wanted % n_names
    # Most lines first, then by name; keep the first three of each customer x snapshot.
    order = np.lexsort((chosen, -counts, key))
    key, chosen = key[order], chosen[order]
    starts = np.flatnonzero(np.concatenate([[True], key[1:] != key[:-1]]))
    rank = np.arange(len(key)) - np.repeat(starts, np.diff(np.append(starts, len(key))))
    out = np.full(len(row_key), "", dtype=object)
    position = np.searchsorted(row_key, key)  # row keys are sorted: customers, then snapshots
    for r in range(TOP_CATEGORIES):
        picked = rank == r
        text = names[chosen[picked]].astype(object)
        out[position[picked]] = text if r == 0 else out[position[picked]] + "|" + text
    return out


# ---- stores ---------------------------------------------------------------------------------


def store_features(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per store per day from its first sale, over the 28 days before the stamp.

    Units count only products sold in units (not fuel or weights). The stockout rate is the share
    of the inventory's store x product x day snapshots at zero, NaN without inventory.
    """
    sales = tables["transactions"]
    origin = sales[TS].min().normalize()
    day = _day_index(sales[TS], origin)
    n_days = int(day.max()) + 1
    stores, row = np.unique(sales[STORE_ID].to_numpy(), return_inverse=True)
    products = tables["products"]
    in_units = _lookup(
        products[PRODUCT_ID], products["sold_in_units"].to_numpy(), sales[PRODUCT_ID], True
    ).astype(bool)
    line_sums = _DaySums(
        row,
        day,
        units=np.where(in_units, sales[QUANTITY].to_numpy(), 0.0),
        net_sales=sales[NET_SALES].to_numpy(),
        lines=np.ones(len(day)),
        promo_lines=sales[DISCOUNT].to_numpy() > 0,
    )
    orders = (
        pd.DataFrame({"row": row, ORDER_ID: sales[ORDER_ID].to_numpy(), "day": day})
        .groupby(["row", ORDER_ID], sort=False)["day"]
        .min()
        .reset_index()
    )
    order_sums = _DaySums(orders["row"], orders["day"], orders=np.ones(len(orders)))
    first_day = _first_per_group(row, day, len(stores))
    owner, end = ragged(first_day + 1, np.full(len(stores), n_days + 1))
    start = end - STORE_WINDOW_DAYS

    n_orders = order_sums.between("orders", owner, start, end)
    lines = line_sums.between("lines", owner, start, end)
    columns = {
        "units_per_day_28d": line_sums.between("units", owner, start, end) / STORE_WINDOW_DAYS,
        "baskets_per_day_28d": n_orders / STORE_WINDOW_DAYS,
        "avg_basket_value_28d": _ratio(line_sums.between("net_sales", owner, start, end), n_orders),
        "promo_share_28d": _ratio(line_sums.between("promo_lines", owner, start, end), lines),
        "stockout_rate_28d": np.full(len(owner), np.nan),
    }
    inventory = tables.get("inventory")
    if inventory is not None and not inventory.empty:
        store = pd.Index(stores).get_indexer(inventory[STORE_ID])
        ours = store >= 0
        snapshots = _DaySums(
            store[ours],
            _day_index(inventory[DATE], origin)[ours],
            snapshots=np.ones(int(ours.sum())),
            empty=inventory["on_hand"].to_numpy()[ours] == 0,
        )
        columns["stockout_rate_28d"] = _ratio(
            snapshots.between("empty", owner, start, end),
            snapshots.between("snapshots", owner, start, end),
        )
    frame = pd.DataFrame(
        {STORE_ID: stores[owner], EVENT_TIMESTAMP: origin + pd.to_timedelta(end, unit="D")}
    )
    return _float_columns(frame, columns)


# ---- products -------------------------------------------------------------------------------


def product_features(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Snapshots every 28 days (and at the last day) of each product from its first sale on.

    `price` is the median paid unit price of the last 91 days, else the list price;
    `popularity_rank` ranks all products of a snapshot by `buyers_91d` (1 = most, ties share the
    best rank, products without buyers come last); `repeat_purchase_rate` is over all history.
    """
    sales = tables["transactions"]
    origin = sales[TS].min().normalize()
    day = _day_index(sales[TS], origin)
    n_days = int(day.max()) + 1
    ends = _snapshot_ends(n_days, PRODUCT_SNAPSHOT_DAYS)
    n_snapshots = len(ends)
    products, row = np.unique(sales[PRODUCT_ID].to_numpy(), return_inverse=True)
    customers, customer = np.unique(sales[CUSTOMER_ID].to_numpy(), return_inverse=True)
    first_day = _first_per_group(row, day, len(products))
    owner, snapshot = ragged(np.searchsorted(ends, first_day, side="right"), n_snapshots)
    end = ends[snapshot]

    # Lines in each snapshot's 91-day window, keyed by product x snapshot.
    line, line_snapshot = _in_windows(day, ends, PRODUCT_WINDOW_DAYS)
    key = row[line] * n_snapshots + line_snapshot
    n_keys = len(products) * n_snapshots
    buyer_keys = _distinct(key * len(customers) + customer[line]) // len(customers)
    buyers = np.bincount(buyer_keys, minlength=n_keys)
    quantity = sales[QUANTITY].to_numpy()[line]
    sold = quantity > 0
    paid = pd.Series(sales[NET_SALES].to_numpy()[line][sold] / quantity[sold])
    median_paid = np.full(n_keys, np.nan)
    medians = paid.groupby(key[sold]).median()
    median_paid[medians.index.to_numpy()] = medians.to_numpy()

    catalogue = tables["products"]
    out_products = products[owner]
    list_price = _lookup(
        catalogue[PRODUCT_ID], catalogue["price"].to_numpy(dtype="float64"), out_products, np.nan
    )
    out_key = owner * n_snapshots + snapshot
    price = np.where(np.isnan(median_paid[out_key]), list_price, median_paid[out_key])

    # Each buyer's first and second distinct orders of the product, as buyer / repeat events.
    baskets = pd.DataFrame(
        {"row": row, "customer": customer, ORDER_ID: sales[ORDER_ID].to_numpy(), "day": day}
    ).drop_duplicates(["row", "customer", ORDER_ID])
    baskets = baskets.sort_values(["row", "customer", "day"], kind="stable")
    nth = baskets.groupby(["row", "customer"], sort=False).cumcount().to_numpy()
    early = nth < 2
    repeat = _DaySums(
        baskets["row"].to_numpy()[early],
        baskets["day"].to_numpy()[early],
        buyers=nth[early] == 0,
        repeaters=nth[early] == 1,
    )
    repeat_rate = _ratio(
        repeat.between("repeaters", owner, None, end), repeat.between("buyers", owner, None, end)
    )

    frame = pd.DataFrame(
        {
            PRODUCT_ID: out_products,
            EVENT_TIMESTAMP: origin + pd.to_timedelta(end, unit="D"),
            CATEGORY: _lookup(
                catalogue[PRODUCT_ID], catalogue[CATEGORY].to_numpy(), out_products, "unknown"
            ),
        }
    )
    columns = {"price": price, "buyers_91d": buyers[out_key]}
    frame = _float_columns(frame, columns)
    frame["popularity_rank"] = (
        frame.groupby(EVENT_TIMESTAMP)["buyers_91d"]
        .rank(method="min", ascending=False)
        .astype("float32")
    )
    frame["repeat_purchase_rate"] = repeat_rate.astype("float32")
    return frame
