"""Demand forecaster: one global LightGBM model over store x product series, direct multi-horizon.

A training row is (series, origin, horizon step): the inputs are the `demand_v1` features as of
the origin (a point-in-time join in training, an online read in serving), the horizon step, the
calendar of the target period and the promotions planned in it, both from the plan known at the
origin (`training.forecast_plan`); the target is the units sold in that period. One model covers
every step, so serving needs only the features and the plan as of now.

Choices that the Complete Journey backtest decided (benchmarks/forecast.py):
- targets and unit-valued inputs are divided by the series' own level (its longest trailing mean),
  so that one model serves slow and fast sellers alike; the tweedie objective keeps forecasts
  non-negative and means, which is what squared-error metrics such as RMSSE reward;
- month and week of year enter only with two years of history: seen once, they are a time index;
- quantiles are conformal: the model is refit on the history before the last horizon of
  origins, and the spread of its errors at those origins, by forecast level, gives P10/P50/P90
  and the error's standard deviation (`std`, which restock orders need: read off P10-P90 as if
  normal, it missed the heavier tails and the order-up-to levels ran out more often than their
  service level said); the same errors, summed over restock covers, give how much more a cover
  varies than its days (`training.cover_variance`);
- what else the store promotes in the target period (`training.promotion_breadth`) enters
  beside the product's own promotions: a broad mailer lifts each product less;
- periods whose sales were capped by a stockout (known only with inventory) are left out of the
  loss: their sales are a lower bound of demand, not demand.
"""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pandas as pd

from features.contract import PRODUCT_ID, STORE_ID
from features.engineering import EVENT_TIMESTAMP, PERIOD, PERIOD_DAYS, PROMO_KINDS, UNITS
from features.errors import UserInputError
from training.cover_variance import cover_variance_ratios
from training.forecast_plan import ForecastPlan, calendar_features, planned_promotions
from training.promotion_breadth import PromotionBreadth

HORIZON_PERIODS = {"D": 28, "W": 4}
ORIGIN = EVENT_TIMESTAMP  # features stamped T describe everything before T: T is the origin
STEP = "step"
FORECAST = "forecast"
STD = "std"  # root mean squared error expected around the forecast
QUANTILES = {"p10": 0.1, "p50": 0.5, "p90": 0.9}
CENSORED = "censored"  # panel column: the period's sales were capped by a stockout
# The series' level: the longest trailing mean it has (early origins lack the long ones).
LEVEL_SOURCES = ("units_mean_182d", "units_mean_91d", "units_mean_28d", "units_mean_7d")

MIN_LEVEL = 0.1  # units per period, so that a series that stopped selling keeps a finite scale
UNIT_VALUED = ("units_lag_", "units_mean_", "units_std_")
SEASONAL_HISTORY_DAYS = 730
LEVEL_BINS = 5  # conformal errors are pooled by forecast-level quintile
# What a fitted forecaster carries; one from an older omnishelf lacks some of it
# (`tracking.load_champion` refuses it rather than let a request or a restock run fail on it).
FORMAT_VERSION = 3


def expand_steps(at_origin: pd.DataFrame, freq: str, horizon: int) -> pd.DataFrame:
    """One row per series x origin x step, with the start of the period each step forecasts."""
    expanded = at_origin.loc[at_origin.index.repeat(horizon)]
    # A fresh frame already: reset_index would copy all of it again (0.5 s at 280,000 rows).
    expanded.index = pd.RangeIndex(len(expanded))
    expanded[STEP] = np.tile(np.arange(1, horizon + 1), len(at_origin))
    expanded[PERIOD] = expanded[ORIGIN] + pd.to_timedelta(
        (expanded[STEP] - 1) * PERIOD_DAYS[freq], unit="D"
    )
    return expanded


def series_level(at_origin: pd.DataFrame) -> np.ndarray:
    """Units per period the series usually sells: its longest available trailing mean."""
    level = pd.Series(np.nan, index=at_origin.index)
    for column in LEVEL_SOURCES:
        if column in at_origin:
            level = level.fillna(at_origin[column])
    return np.maximum(level.fillna(MIN_LEVEL).to_numpy(dtype="float64"), MIN_LEVEL)


class DemandForecaster:
    """Tweedie LightGBM on level-scaled features as of the origin, the target period's calendar
    and its planned promotions; conformal P10/P50/P90."""

    def __init__(
        self,
        freq: str,
        country: str = "US",
        horizon: int | None = None,
        params: dict | None = None,
        num_boost_round: int = 300,
        quantiles: bool = True,
    ):
        """`quantiles=False` skips the calibration refit: point forecasts only (sweeps)."""
        self.freq, self.country = freq, country
        self.quantiles = quantiles
        self.horizon = horizon or HORIZON_PERIODS[freq]
        self.num_boost_round = num_boost_round
        self.params = {
            "objective": "tweedie",
            "tweedie_variance_power": 1.2,
            "learning_rate": 0.03,
            "num_leaves": 31,
            "min_data_in_leaf": 100,
            "lambda_l2": 1.0,
            "feature_fraction": 0.8,
            "bagging_fraction": 0.8,
            "bagging_freq": 1,
            "seed": 0,
            "num_threads": 2,
            "verbosity": -1,
            **(params or {}),
        }

    # ---- design ------------------------------------------------------------------------------

    def _design(
        self, at_origin: pd.DataFrame, plan: ForecastPlan, breadth: PromotionBreadth | None = None
    ) -> pd.DataFrame:
        rows = expand_steps(at_origin, self.freq, self.horizon)
        level = series_level(rows)
        for column in self.input_names_:
            if column.startswith(UNIT_VALUED):
                rows[column] = rows[column] / level
        rows["level"] = level
        calendar = calendar_features(rows[PERIOD], self.freq, plan)
        rows[calendar.columns] = calendar.to_numpy()
        planned = planned_promotions(rows, plan.promotions, self.freq)
        rows[planned.columns] = planned.to_numpy()
        if "price_last" in rows:
            rows["promo_price_ratio"] = rows["promo_price"] / rows["price_last"]
        counted = (breadth or self.breadth_).features(rows)
        rows[counted.columns] = counted.to_numpy()
        return rows

    def _matrix(self, rows: pd.DataFrame) -> pd.DataFrame:
        return rows.reindex(columns=self.feature_names_).astype("float32")

    def _targets(
        self, at_origin: pd.DataFrame, panel: pd.DataFrame, plan: ForecastPlan
    ) -> pd.DataFrame:
        """Design rows joined to the units they forecast; censored periods are left out."""
        target = panel[[STORE_ID, PRODUCT_ID, PERIOD, UNITS]]
        if CENSORED in panel:
            target = target[~panel[CENSORED].to_numpy(dtype=bool)]
        rows = self._design(at_origin, plan).merge(target, on=[STORE_ID, PRODUCT_ID, PERIOD])
        return rows[[STORE_ID, PRODUCT_ID, ORIGIN, PERIOD, UNITS, *self.feature_names_]]

    def _training_rows(self, at_origin, panel, plan: ForecastPlan, client):
        """The training rows: built here, or on the Dask cluster of `client` as a distributed
        frame, one task per block of origins, with the panel and the plan sent once."""
        if client is None:
            return self._targets(at_origin, panel, plan)
        import dask.dataframe as dd

        origins = np.sort(at_origin[ORIGIN].unique())
        n_tasks = min(len(origins), 4 * max(1, len(client.scheduler_info()["workers"])))
        blocks = [
            at_origin[at_origin[ORIGIN].isin(part)] for part in np.array_split(origins, n_tasks)
        ]
        shared_panel = client.scatter(panel, broadcast=True)
        shared_plan = client.scatter(plan, broadcast=True)
        parts = client.map(self._targets, blocks, panel=shared_panel, plan=shared_plan)
        return dd.from_delayed(parts, meta=parts[0].result().iloc[:0], verify_meta=False)

    def _train(self, rows, client=None) -> lgb.Booster:
        if client is None:
            label = rows[UNITS].to_numpy() / rows["level"].to_numpy()
            data = lgb.Dataset(self._matrix(rows), label=label)
            return lgb.train(self.params, data, num_boost_round=self.num_boost_round)
        # lightgbm.dask refuses empty partitions, which a filter on dates leaves behind.
        lengths = rows.map_partitions(len).compute()
        rows = rows.partitions[[i for i, n in enumerate(lengths) if n > 0]]
        label = rows[UNITS] / rows["level"]
        # Each worker trains on its partitions; threads are the workers' own.
        params = {k: v for k, v in self.params.items() if k != "num_threads"}
        model = lgb.DaskLGBMRegressor(client=client, n_estimators=self.num_boost_round, **params)
        model.fit(rows[self.feature_names_].astype("float32"), label)
        return model.to_local().booster_

    # ---- fit / predict -----------------------------------------------------------------------

    def fit(
        self,
        at_origin: pd.DataFrame,
        panel: pd.DataFrame,
        promotions: pd.DataFrame | None = None,
        calendar: pd.DataFrame | None = None,
        products: pd.DataFrame | None = None,
        client=None,
        breadth: PromotionBreadth | None = None,
    ) -> DemandForecaster:
        """Fit on every origin x step whose target period is in `panel`, then calibrate the
        quantiles on the last horizon of the panel with a model that did not see it.

        Args:
            at_origin: store_id, product_id, event_timestamp (the origin) and the demand features.
            panel: store_id, product_id, period, units (and `censored` where inventory is known):
                the actual sales the steps are scored on.
            promotions: the canonical promotions table: planned promotions of target periods.
            calendar: the canonical calendar table: its holidays and `event` days (see
                `training.forecast_plan`).
            products: the canonical products table: their categories, for what else of a
                product's category is on promotion.
            client: a `distributed.Client`: training rows are built and LightGBM trained on its
                cluster (`lightgbm.dask`); None trains in this process.
            breadth: what else is promoted, counted once by `promotion_breadth` for several
                fits (a backtest's origins and the final fit) from the same promotions and
                products tables; None counts it here from `promotions` and `products`.
        """
        self.input_names_ = [
            c for c in at_origin.columns if c not in (STORE_ID, PRODUCT_ID, ORIGIN)
        ]
        span = (panel[PERIOD].max() - panel[PERIOD].min()).days if len(panel) else 0
        seasonal = ["month", "week_of_year"] if span >= SEASONAL_HISTORY_DAYS else []
        calendar_names = [
            STEP,
            "weekday",
            "holidays_in_period",
            "days_to_holiday",
            "days_since_holiday",
            "paydays_in_period",
            "events_in_period",
            *seasonal,
        ]
        promo_names = ["promo_share", *(f"{kind}_share" for kind in PROMO_KINDS)]
        if "price_last" in at_origin:
            promo_names.append("promo_price_ratio")
        self.feature_names_ = [
            *self.input_names_,
            "level",
            *calendar_names,
            *promo_names,
            *PromotionBreadth.NAMES,
        ]
        if panel.empty or at_origin.empty:
            raise UserInputError("no training rows: no origin has a target period inside the panel")
        last_period = panel[PERIOD].max()
        # A served forecast may start from any later origin, not from one before the history.
        self.history_start_ = panel[PERIOD].min()
        series = at_origin[[STORE_ID, PRODUCT_ID]].drop_duplicates()
        if breadth is None:
            breadth = self.promotion_breadth(at_origin, panel, promotions, products)
        elif not breadth.covers(self.freq, series, *self._breadth_range(at_origin, panel)):
            raise ValueError(
                "the promotion counts passed to fit do not cover its series and periods: "
                "build them with `promotion_breadth` on the widest data the fits read"
            )
        self.breadth_ = breadth
        plan = ForecastPlan(promotions, calendar, self.country)
        rows = self._training_rows(at_origin, panel, plan, client)
        self.training_rows_ = len(rows)
        if self.training_rows_ == 0:
            raise UserInputError("no training rows: no origin has a target period inside the panel")
        (
            self.residual_bins_,
            self.residual_quantiles_,
            self.residual_rms_,
            self.cover_variance_ratio_,
        ) = (
            self._calibrate(rows, at_origin[ORIGIN], last_period, client)
            if self.quantiles
            else (None, None, None, None)
        )
        self.booster_ = self._train(rows, client)
        self.series_ = pd.MultiIndex.from_frame(series)
        self.format_version_ = FORMAT_VERSION
        return self

    def _breadth_range(
        self, at_origin: pd.DataFrame, panel: pd.DataFrame
    ) -> tuple[pd.Timestamp, pd.Timestamp]:
        """The first and last periods a fit on these reads promotion counts of: from the first
        origin to two horizons past the data (a backtest's restock reviews forecast from
        origins inside the window after it)."""
        span = pd.Timedelta(days=PERIOD_DAYS[self.freq])
        next_origin = panel[PERIOD].max() + span
        return at_origin[ORIGIN].min(), next_origin + (2 * self.horizon - 1) * span

    def promotion_breadth(
        self,
        at_origin: pd.DataFrame,
        panel: pd.DataFrame,
        promotions: pd.DataFrame | None,
        products: pd.DataFrame | None,
    ) -> PromotionBreadth:
        """What else is promoted, counted once for a fit on `at_origin` and `panel` and for
        fits on their earlier parts: each count reads the whole promotions table (a chain's
        has tens of millions of rows), so a backtest passes one build to every `fit`."""
        series = at_origin[[STORE_ID, PRODUCT_ID]].drop_duplicates()
        return PromotionBreadth(
            promotions, products, self.freq, series, *self._breadth_range(at_origin, panel)
        )

    def _calibrate(
        self, rows, origins: pd.Series, last_period: pd.Timestamp, client
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Conformal error quantiles, root mean square and cover variance ratios from the
        origins of the last horizon whose whole horizon is in the data, forecast by a model fit
        on the rows whose targets precede the first of them.

        Errors are variance-stabilised, (actual - forecast) / sqrt(forecast + 0.5), and pooled by
        forecast-level quintile: a slow seller's spread is not a fast seller's. Several origins
        (a horizon's worth, on the training stride) rather than one steady the tails and show
        how errors add up over a cover (`training.cover_variance`).

        Returns:
            (quintile edges of the forecast, (5, 3) error quantiles, (5,) error root mean square,
            (horizon days,) cover variance ratios).
        """
        origins = pd.DatetimeIndex(np.sort(origins.unique()))
        span = pd.Timedelta(days=PERIOD_DAYS[self.freq])
        complete = origins[origins + self.horizon * span <= last_period + span]
        last_held = complete[-1] if len(complete) else origins[-1]
        held_origins = origins[
            (origins > origins[0])
            & (origins <= last_held)
            & (origins > last_held - self.horizon * span)
        ]
        if not len(held_origins):
            raise UserInputError("too little history to calibrate the quantiles: need two horizons")
        booster = self._train(rows[rows[PERIOD] < held_origins[0]], client)
        held = rows[rows[ORIGIN].isin(held_origins)]
        if client is not None:
            held = held.compute()
        forecast = booster.predict(self._matrix(held)) * held["level"].to_numpy()
        spread = np.sqrt(forecast + 0.5)
        error = (held[UNITS].to_numpy() - forecast) / spread
        edges = np.quantile(forecast, np.linspace(0, 1, LEVEL_BINS + 1)[1:-1])
        band = np.searchsorted(edges, forecast)
        pooled = [error[band == b] if (band == b).any() else error for b in range(LEVEL_BINS)]
        table = np.array([np.quantile(errors, list(QUANTILES.values())) for errors in pooled])
        rms = np.array([np.sqrt(np.mean(errors**2)) for errors in pooled])
        # Each held forecast's error and expected variance, laid out series x origin by step.
        by_step = pd.DataFrame(
            {
                "cover": held.groupby([STORE_ID, PRODUCT_ID, ORIGIN], sort=False).ngroup(),
                STEP: held[STEP].to_numpy(),
                "error": error * spread,
                "variance": (rms[band] * spread) ** 2,
            }
        ).pivot(index="cover", columns=STEP)
        steps = range(1, self.horizon + 1)
        ratios = cover_variance_ratios(
            by_step["error"].reindex(columns=steps).to_numpy(),
            by_step["variance"].reindex(columns=steps).to_numpy(),
            PERIOD_DAYS[self.freq],
        )
        return edges, table, rms, ratios

    def predict(
        self,
        at_origin: pd.DataFrame,
        plan: ForecastPlan | None = None,
        steps: np.ndarray | None = None,
        what_if: pd.DataFrame | None = None,
    ) -> pd.DataFrame:
        """Every step of every series: store_id, product_id, origin, step, period, forecast (the
        mean), std (the error expected around it), p10, p50, p90.

        `steps`, one per row of `at_origin`, leaves out the steps after it (what a restock cover
        does not reach): the other rows come out as they would with all steps, since each step
        is forecast from its own row. `plan`: the promotions and calendar known at the origin
        (None: no promotions, the country's public holidays). `what_if`: promotions added to
        the plan (same columns as its promotions); they also count in what else the store
        promotes.
        """
        plan = plan or ForecastPlan(country=self.country)
        breadth = None
        if what_if is not None:
            plan = plan.with_added(what_if)
            breadth = self.breadth_.with_added(what_if)
        rows = self._design(at_origin, plan, breadth)
        if steps is not None:  # expand_steps lays out each series' steps one after another
            rows = rows[rows[STEP].to_numpy() <= np.repeat(np.asarray(steps), self.horizon)]
        rows[FORECAST] = self.booster_.predict(self._matrix(rows)) * rows["level"].to_numpy()
        columns = [STORE_ID, PRODUCT_ID, ORIGIN, STEP, PERIOD, FORECAST, STD, *QUANTILES]
        if self.residual_quantiles_ is None:
            return rows.assign(**dict.fromkeys([STD, *QUANTILES], np.nan))[columns]
        band = np.searchsorted(self.residual_bins_, rows[FORECAST].to_numpy())
        spread = np.sqrt(rows[FORECAST].to_numpy() + 0.5)
        rows[STD] = self.residual_rms_[band] * spread
        for i, name in enumerate(QUANTILES):
            rows[name] = np.maximum(
                rows[FORECAST].to_numpy() + self.residual_quantiles_[band, i] * spread, 0.0
            )
        return rows[columns]

    def unservable_reason(self) -> str | None:
        """Why this fitted model cannot size restock orders, or None when it can."""
        if getattr(self, "format_version_", None) != FORMAT_VERSION:
            return "it was fitted by an older omnishelf"
        if self.residual_rms_ is None:
            return "it was fitted without quantiles: it has no error spread (std) to size orders"
        return None

    def predict_frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        return self.predict(frame)

    def feature_importance(self) -> pd.Series:
        gain = self.booster_.feature_importance(importance_type="gain")
        return pd.Series(gain, index=self.feature_names_).sort_values(ascending=False)
