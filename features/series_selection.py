"""Which store x product series are forecast: those that sold often enough before a moment.

A series is chosen on its activity strictly before the moment it is chosen for (a backtest
origin, or the end of the data when a model is fitted for serving), never on the periods it is
then scored on: choosing on the whole grid would drop the series that fade inside a test window
and flatter the figures measured there.
"""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

from features.contract import PRODUCT_ID, STORE_ID

PERIOD = "period"
UNITS = "units"
MIN_ACTIVE_SHARE = 0.5  # a series is forecast when it sold in at least this share of periods


def active_series(
    sales: pd.Series,
    grid: pd.DatetimeIndex,
    before: pd.Timestamp | None = None,
    share: float = MIN_ACTIVE_SHARE,
) -> pd.MultiIndex:
    """The (store_id, product_id) pairs that sold in at least `share` of the grid's periods
    strictly before `before` (all of them when None).

    Args:
        sales: units indexed by store_id, product_id, period, only the rows with a sale or a
            return (a sparse panel: missing rows are periods without sales).
        grid: every period of the data, for the count of periods.
    """
    periods = sales.index.get_level_values(PERIOD)
    seen = periods < before if before is not None else slice(None)
    n_periods = int((grid < before).sum()) if before is not None else len(grid)
    selling = (sales[seen] > 0).groupby(level=[STORE_ID, PRODUCT_ID]).sum()
    if n_periods == 0:
        return selling.index[:0]
    return selling.index[selling >= share * n_periods]


def active_before(
    panel: pd.DataFrame, before: pd.Timestamp, share: float = MIN_ACTIVE_SHARE
) -> pd.DataFrame:
    """The rows of a dense panel (every period of every series) whose series sold in `share`
    of the periods before `before`: whole series, the periods after `before` included."""
    grid = pd.DatetimeIndex(panel[PERIOD].unique())
    sales = panel.set_index([STORE_ID, PRODUCT_ID, PERIOD])[UNITS]
    kept = active_series(sales, grid, before, share)
    return panel[pd.MultiIndex.from_frame(panel[[STORE_ID, PRODUCT_ID]]).isin(kept)]


def active_before_any(
    sales: pd.Series,
    grid: pd.DatetimeIndex,
    moments: Iterable[pd.Timestamp | None],
    share: float = MIN_ACTIVE_SHARE,
) -> pd.MultiIndex:
    """The series active before at least one of `moments` (see `active_series`), sorted."""
    chosen = [active_series(sales, grid, moment, share) for moment in moments]
    union = chosen[0]
    for more in chosen[1:]:
        union = union.union(more)
    return union.sort_values()
