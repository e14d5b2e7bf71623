"""What is known at a forecast origin about the days ahead: the promotions planned and the calendar.

A forecast made at an origin reads the plan as it stands then: the promotions table as imported
(promotions are planned ahead, so the horizon's own are known) and the holidays and retail events
of the calendar. The imported calendar says which of its days are holidays; days past it (the
horizon usually is: a calendar is imported with the data) take the country's public holidays.
`calendar_features` and `planned_promotions` turn it into the inputs of each target period. The
same plan builds the training rows and the served forecasts, so they cannot drift.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path

import holidays
import numpy as np
import pandas as pd

from features.contract import DATE, PRODUCT_ID, STORE_ID
from features.engineering import PERIOD, PERIOD_DAYS, PROMO_KINDS
from features.errors import UserInputError

PLAN_TABLES = ("promotions", "calendar")
PAYDAYS = (1, 15)  # days of the month: semi-monthly pay, the most common US schedule
# Holidays further than this from a period count as "none near": demand moves in the days around
# one (stocking up before, a lull after), not weeks away.
HOLIDAY_DISTANCE_CAP_DAYS = 14


@dataclass(frozen=True)
class ForecastPlan:
    """The promotions planned and the calendar known at an origin.

    Attributes:
        promotions: the canonical promotions table (end date inclusive), or None.
        calendar: the canonical calendar table (date, is_holiday, event), or None: the
            country's public holidays and no events.
        country: ISO code of the country whose public holidays fill days past the calendar.
    """

    promotions: pd.DataFrame | None = None
    calendar: pd.DataFrame | None = None
    country: str = "US"

    def holiday_days(self, first: pd.Timestamp, last: pd.Timestamp) -> pd.DatetimeIndex:
        """Holidays from `first` to `last` (inclusive): the calendar's `is_holiday` days where
        it has the day, the country's public holidays elsewhere."""
        first, last = pd.Timestamp(first).normalize(), pd.Timestamp(last).normalize()
        public = pd.DatetimeIndex(
            sorted(holidays.country_holidays(self.country, years=range(first.year, last.year + 1)))
        )
        days = public[(public >= first) & (public <= last)]
        if self.calendar is None or "is_holiday" not in self.calendar or self.calendar.empty:
            return days
        dated = pd.DatetimeIndex(self.calendar[DATE]).normalize()
        known = dated[(dated >= first) & (dated <= last)]
        imported = dated[self.calendar["is_holiday"].fillna(False).to_numpy(dtype=bool)]
        # Where the calendar has a day, it decides, whether the package agrees or not.
        return days[~days.isin(known)].union(imported[(imported >= first) & (imported <= last)])

    def event_days(self) -> pd.DatetimeIndex:
        """Days of the calendar with a retail event (Black Friday, 618, ...)."""
        if self.calendar is None or "event" not in self.calendar:
            return pd.DatetimeIndex([])
        events = self.calendar["event"].fillna("").astype(str)
        return pd.DatetimeIndex(self.calendar.loc[events != "", DATE]).normalize()

    def with_added(self, promotions: pd.DataFrame) -> ForecastPlan:
        """This plan with `promotions` added (a what-if)."""
        joined = promotions if self.promotions is None else pd.concat([self.promotions, promotions])
        return ForecastPlan(joined.reset_index(drop=True), self.calendar, self.country)


def holiday_distances(
    starts: pd.DatetimeIndex, span_days: int, holiday_days: pd.DatetimeIndex
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For periods starting at `starts` and lasting `span_days`: the holidays inside each, the
    days from its start to the next holiday on or after it, and the days since the last holiday
    before it, both capped at HOLIDAY_DISTANCE_CAP_DAYS."""
    days = np.sort(holiday_days.normalize().unique().to_numpy())
    starts_ns = pd.DatetimeIndex(starts).to_numpy()
    span = np.timedelta64(span_days, "D")
    inside = np.searchsorted(days, starts_ns + span) - np.searchsorted(days, starts_ns)
    next_at = np.searchsorted(days, starts_ns)  # first holiday on or after the start
    cap = float(HOLIDAY_DISTANCE_CAP_DAYS)
    padded = np.append(days, np.datetime64("NaT"))
    to_next = (padded[next_at] - starts_ns) / np.timedelta64(1, "D")
    before = np.where(next_at > 0, next_at - 1, len(days))
    since = (starts_ns - padded[before]) / np.timedelta64(1, "D")
    return (
        inside,
        np.minimum(np.nan_to_num(to_next, nan=cap), cap),
        np.minimum(np.nan_to_num(since, nan=cap), cap),
    )


def calendar_features(targets: pd.Series, freq: str, plan: ForecastPlan) -> pd.DataFrame:
    """Calendar of each target period: month, week, weekday (daily); the holidays, paydays and
    retail events inside it; and the days to the next holiday and since the last one (demand
    moves around a holiday, not only on it), holidays and events as `plan` knows them."""
    starts = pd.DatetimeIndex(targets)
    unique = starts.unique()
    years = range(unique.min().year, unique.max().year + 1)
    span = pd.Timedelta(days=PERIOD_DAYS[freq])
    reach = pd.Timedelta(days=HOLIDAY_DISTANCE_CAP_DAYS)
    holiday_days = plan.holiday_days(unique.min() - reach, unique.max() + span + reach)
    in_period, to_next, since_last = (
        pd.Series(values, index=unique).reindex(starts).to_numpy()
        for values in holiday_distances(unique, span.days, holiday_days)
    )

    def inside(days: pd.DatetimeIndex) -> np.ndarray:
        days = days.sort_values()
        per_start = np.searchsorted(days, unique + span) - np.searchsorted(days, unique)
        return pd.Series(per_start, index=unique).reindex(starts).to_numpy()

    paydays = pd.DatetimeIndex(
        [
            pd.Timestamp(year, month, day)
            for year in range(years.start, years.stop + 1)
            for month in range(1, 13)
            for day in PAYDAYS
        ]
    )
    return pd.DataFrame(
        {
            "month": starts.month,
            "week_of_year": starts.isocalendar().week.to_numpy().astype(int),
            "weekday": starts.weekday if freq == "D" else 0,
            "holidays_in_period": in_period,
            "days_to_holiday": to_next,
            "days_since_holiday": since_last,
            "paydays_in_period": inside(paydays),
            "events_in_period": inside(plan.event_days()),
        }
    )


def planned_promotions(
    rows: pd.DataFrame, promotions: pd.DataFrame | None, freq: str
) -> pd.DataFrame:
    """Share of each row's target period under a promotion, in all and by kind, and the promoted
    price. Promotions are planned ahead, so the target period's own are known at the origin.

    Args:
        rows: store_id, product_id, period (start of the target period).
        promotions: the canonical promotions table (end date inclusive), or None.
    """
    names = ["promo_share", *(f"{kind}_share" for kind in PROMO_KINDS), "promo_price"]
    out = pd.DataFrame(0.0, index=rows.index, columns=names)
    out["promo_price"] = np.nan
    if promotions is None or promotions.empty:
        return out
    days = PERIOD_DAYS[freq]
    # A chain's table holds every store x product x week on promotion (21 million rows for
    # Complete Journey), and a join factorises all of it: narrow it to these rows' products and
    # periods first, which made the join ~10x faster there.
    first, end = rows[PERIOD].min(), rows[PERIOD].max() + pd.Timedelta(days=days)
    promotions = promotions[
        (promotions["end_date"] >= first)
        & (promotions["start_date"] < end)
        & promotions[PRODUCT_ID].isin(rows[PRODUCT_ID].unique())
    ]
    keyed = rows[[STORE_ID, PRODUCT_ID, PERIOD]].reset_index(names="row")
    pairs = keyed.merge(promotions, on=[STORE_ID, PRODUCT_ID])
    period_end = pairs[PERIOD] + pd.Timedelta(days=days)
    first = np.maximum(pairs["start_date"].to_numpy(), pairs[PERIOD].to_numpy())
    last = np.minimum((pairs["end_date"] + pd.Timedelta(days=1)).to_numpy(), period_end.to_numpy())
    overlap = np.clip((last - first) / np.timedelta64(1, "D"), 0, None) / days
    pairs = pairs.assign(overlap=overlap)[overlap > 0]
    grouped = pairs.groupby("row")
    # Overlapping promotions of one series count a day once: shares are capped at 1.
    out.loc[grouped.size().index, "promo_share"] = grouped["overlap"].sum().clip(upper=1.0)
    for kind, types in PROMO_KINDS.items():
        of_kind = pairs[pairs["promo_type"].isin(types)].groupby("row")["overlap"].sum()
        out.loc[of_kind.index, f"{kind}_share"] = of_kind.clip(upper=1.0)
    if "price" in pairs:
        out.loc[grouped.size().index, "promo_price"] = grouped["price"].min()
    return out


def read_plan(tables_dir: Path, product_ids: np.ndarray, country: str) -> ForecastPlan:
    """The plan as the workspace's tables hold it now: the promotions of `product_ids` (a
    chain's table has tens of millions of rows; a model forecasts few of its products) and the
    calendar. A table the dataset lacks is None, as in training."""
    promotions_file, calendar_file = (tables_dir / f"{name}.parquet" for name in PLAN_TABLES)
    wanted = [int(p) for p in np.unique(product_ids)]
    promotions = (
        pd.read_parquet(promotions_file, filters=[(PRODUCT_ID, "in", wanted)])
        if promotions_file.exists()
        else None
    )
    calendar = pd.read_parquet(calendar_file) if calendar_file.exists() else None
    return ForecastPlan(promotions, calendar, country)


def origin_stamp(
    as_of: date | None, newest: pd.Timestamp, history_start: pd.Timestamp, freq: str
) -> pd.Timestamp:
    """The stamp of the features a forecast starts from (features stamped T describe the days
    before T): `newest` by default, else that of the last period ending on or before `as_of`,
    the last day of data the caller wants the forecast made from.

    Raises:
        ValueError naming `as_of` when it is after the newest data day (newest - 1 day) or
        before the end of the first period the model's history has.
    """
    newest = pd.Timestamp(newest)
    if as_of is None:
        return newest
    last_day = newest - pd.Timedelta(days=1)
    first_end = pd.Timestamp(history_start) + pd.Timedelta(days=PERIOD_DAYS[freq] - 1)
    as_of = pd.Timestamp(as_of)
    if as_of > last_day:
        raise UserInputError(
            f"as_of {as_of:%Y-%m-%d} is after the newest data day {last_day:%Y-%m-%d}"
        )
    if as_of < first_end:
        raise UserInputError(
            f"as_of {as_of:%Y-%m-%d} is before the end of the model's first period "
            f"{first_end:%Y-%m-%d}: there is no history to forecast from"
        )
    stamp = as_of + pd.Timedelta(days=1)
    # Weekly stamps are Mondays (weeks start on Monday): the last whole week before as_of's end.
    return stamp if freq == "D" else stamp - pd.Timedelta(days=stamp.weekday())
