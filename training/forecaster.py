"""Demand forecaster: one global LightGBM model over store x product series, direct multi-horizon.

A training row is (series, origin, horizon step): the inputs are the `demand_v1` features as of
the origin (a point-in-time join in training, an online read in serving) plus the horizon step and
the calendar of the target period; the target is the units sold in that period. One model covers
every step, so serving needs only the features as of now.
"""

from __future__ import annotations

import holidays
import lightgbm as lgb
import numpy as np
import pandas as pd

from features.contract import PRODUCT_ID, STORE_ID
from features.engineering import EVENT_TIMESTAMP, PERIOD, PERIOD_DAYS, UNITS

HORIZON_PERIODS = {"D": 28, "W": 4}
ORIGIN = EVENT_TIMESTAMP  # features stamped T describe everything before T: T is the origin
STEP = "step"
FORECAST = "forecast"
CALENDAR_FEATURES = ["step", "month", "week_of_year", "weekday", "holidays_in_period"]


def calendar_features(targets: pd.Series, freq: str, country: str) -> pd.DataFrame:
    """Calendar of each target period: month, week, weekday (daily) and holidays inside it."""
    starts = pd.DatetimeIndex(targets)
    unique = starts.unique()
    years = range(unique.min().year, unique.max().year + 1)
    holiday_days = pd.DatetimeIndex(sorted(holidays.country_holidays(country, years=years)))
    span = PERIOD_DAYS[freq]
    counts = np.searchsorted(holiday_days, unique + pd.Timedelta(days=span)) - np.searchsorted(
        holiday_days, unique
    )
    per_start = pd.Series(counts, index=unique)
    return pd.DataFrame(
        {
            "month": starts.month,
            "week_of_year": starts.isocalendar().week.to_numpy().astype(int),
            "weekday": starts.weekday if freq == "D" else 0,
            "holidays_in_period": per_start.reindex(starts).to_numpy(),
        }
    )


def expand_steps(at_origin: pd.DataFrame, freq: str, horizon: int) -> pd.DataFrame:
    """One row per series x origin x step, with the start of the period each step forecasts."""
    expanded = at_origin.loc[at_origin.index.repeat(horizon)].reset_index(drop=True)
    expanded[STEP] = np.tile(np.arange(1, horizon + 1), len(at_origin))
    expanded[PERIOD] = expanded[ORIGIN] + pd.to_timedelta(
        (expanded[STEP] - 1) * PERIOD_DAYS[freq], unit="D"
    )
    return expanded


class DemandForecaster:
    """Tweedie LightGBM over Feast features as of the origin plus the target period's calendar."""

    def __init__(
        self,
        freq: str,
        country: str = "US",
        horizon: int | None = None,
        params: dict | None = None,
        num_boost_round: int = 300,
    ):
        self.freq, self.country = freq, country
        self.horizon = horizon or HORIZON_PERIODS[freq]
        self.num_boost_round = num_boost_round
        self.params = {
            "objective": "tweedie",
            "tweedie_variance_power": 1.2,
            "learning_rate": 0.05,
            "num_leaves": 31,
            "min_data_in_leaf": 50,
            "feature_fraction": 0.8,
            "bagging_fraction": 0.8,
            "bagging_freq": 1,
            "seed": 0,
            "num_threads": 2,
            "verbosity": -1,
            **(params or {}),
        }

    def _design(self, at_origin: pd.DataFrame) -> pd.DataFrame:
        rows = expand_steps(at_origin, self.freq, self.horizon)
        calendar = calendar_features(rows[PERIOD], self.freq, self.country)
        rows[calendar.columns] = calendar.to_numpy()
        return rows

    def fit(self, at_origin: pd.DataFrame, panel: pd.DataFrame) -> DemandForecaster:
        """Fit on every origin x step whose target period is in `panel`.

        Args:
            at_origin: store_id, product_id, event_timestamp (the origin) and the demand features.
            panel: store_id, product_id, period, units: the actual sales the steps are scored on.
        """
        self.input_names_ = [
            c for c in at_origin.columns if c not in (STORE_ID, PRODUCT_ID, ORIGIN)
        ]
        self.feature_names_ = self.input_names_ + CALENDAR_FEATURES
        rows = self._design(at_origin).merge(
            panel[[STORE_ID, PRODUCT_ID, PERIOD, UNITS]], on=[STORE_ID, PRODUCT_ID, PERIOD]
        )
        if rows.empty:
            raise ValueError("no training rows: no origin has a target period inside the panel")
        data = lgb.Dataset(rows[self.feature_names_].astype("float32"), label=rows[UNITS])
        self.booster_ = lgb.train(self.params, data, num_boost_round=self.num_boost_round)
        self.training_rows_ = len(rows)
        self.series_ = pd.MultiIndex.from_frame(at_origin[[STORE_ID, PRODUCT_ID]].drop_duplicates())
        # Served forecasts start where the last period of the training data ends.
        self.next_origin_ = panel[PERIOD].max() + pd.Timedelta(days=PERIOD_DAYS[self.freq])
        return self

    def predict(self, at_origin: pd.DataFrame) -> pd.DataFrame:
        """Every step of every series: store_id, product_id, origin, step, period, forecast."""
        rows = self._design(at_origin)
        rows[FORECAST] = self.booster_.predict(rows[self.feature_names_].astype("float32"))
        return rows[[STORE_ID, PRODUCT_ID, ORIGIN, STEP, PERIOD, FORECAST]]

    def predict_frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        return self.predict(frame)

    def feature_importance(self) -> pd.Series:
        gain = self.booster_.feature_importance(importance_type="gain")
        return pd.Series(gain, index=self.feature_names_).sort_values(ascending=False)


def seasonal_naive(
    panel: pd.DataFrame, origin: pd.Timestamp, freq: str, horizon: int
) -> pd.DataFrame:
    """Same weekday last week for daily data; last week's units for weekly data (a year of history
    is too short for a yearly season)."""
    season = 7 if freq == "D" else 1
    history = panel[panel[PERIOD] < origin]
    last = history[history[PERIOD] >= origin - pd.Timedelta(days=season * PERIOD_DAYS[freq])]
    steps = []
    for step in range(1, horizon + 1):
        offset = (step - 1) % season
        source = origin - pd.Timedelta(days=(season - offset) * PERIOD_DAYS[freq])
        target = origin + pd.Timedelta(days=(step - 1) * PERIOD_DAYS[freq])
        values = last[last[PERIOD] == source][[STORE_ID, PRODUCT_ID, UNITS]]
        steps.append(
            values.assign(**{STEP: step, PERIOD: target}).rename(columns={UNITS: FORECAST})
        )
    return pd.concat(steps, ignore_index=True)
