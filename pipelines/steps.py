"""The steps of the pipeline: ingest -> features -> train (+ evaluate, register).

Each step is idempotent: it reuses what an earlier run built for the same data and code, and a
`force` flag rebuilds.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import math
import shutil
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from importlib.metadata import version
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

from features.contract import CUSTOMER_ID, DATE, PRODUCT_ID, STORE_ID, TS
from features.dataset import DatasetInfo, load_info, load_tables, save_tables, write_atomically
from features.engineering import (
    EVENT_TIMESTAMP,
    PERIOD,
    PERIOD_DAYS,
    customer_features,
    daily_demand,
    demand_panel,
    period_grid,
    product_features,
    store_features,
    store_product_features,
)
from features.errors import UserInputError
from features.feature_store import (
    apply_definitions,
    data_clock,
    historical_features,
    historical_view_features,
    history_unchanged,
    materialize,
    open_store,
    read_offline_table,
    write_offline_tables,
)
from features.identity import (
    IdentityLedger,
    identity_features,
    resolution,
    resolved_tables,
    without_forgotten,
    write_identity_map,
)
from features.model_removals import clear_removals, pending_removals
from features.series_selection import active_before
from features.settings import Settings
from training import plots, tracking
from training.backtest import (
    FINAL,
    Backtest,
    backtest,
    cover_demand,
    policy_order_up_to,
    replay_restock,
    rolling_origins,
    score_table,
)
from training.evaluation import RECALL_KS, TEST_DAYS
from training.forecast_plan import origin_stamp, read_plan
from training.forecaster import HORIZON_PERIODS, DemandForecaster
from training.promotion_breadth import PromotionBreadth
from training.ranker import POOL_SIZES
from training.recommender import FINAL as FINAL_RECOMMENDER
from training.recommender import (
    HEADLINE_METRICS,
    SERVING_RULES,
    Evaluation,
    NextBestProduct,
    evaluate_protocol,
)
from training.restock import REVIEW_DAYS, plan_orders

log = logging.getLogger(__name__)


def _source_digest(*packages: str) -> str:
    """A hash of the packages' Python sources: features and models built by other code are
    rebuilt, even when the package version did not move."""
    digest = hashlib.sha256()
    root = Path(__file__).resolve().parents[1]
    for path in sorted(p for package in packages for p in (root / package).rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


CODE_VERSION = f"{version('omnishelf')}+{_source_digest('features', 'training')}"
FEATURE_CODE = _source_digest("features")
FINGERPRINT_FILE = "offline/dataset_fingerprint"
MIN_HISTORY_PERIODS = 4  # origins before this have too little history to learn from
# Metrics shown in summaries and demo.json.
# Reported figures come from the holdout, the final window that no sweep tuned on.
RECOMMENDER_HEADLINE = ("holdout_recall_at_10", "holdout_best_baseline_recall_at_10")
HOLDOUT_METRIC = "holdout_wrmsse"  # lower is better; the promotion gate of forecasters
RECOMMENDER_HOLDOUT_METRIC = "holdout_recall_at_10"  # higher is better; the recommenders' gate
# Forecaster run artifact: the policy's replay per series, which the KPI report breaks down.
REPLAY_BY_SERIES = "replay_by_series.json"
FORECASTER_HEADLINE = (
    "holdout_wrmsse",
    "holdout_wrmsse_best_stat",
    "holdout_p90_coverage",
    "stockout_rate_ratio",
)
# AutoETS takes ~60 ms per daily series: `omnishelf backtest` runs it, training does without.
STEP_STAT_MODELS = ("seasonal_naive", "moving_average", "CrostonOptimized", "ADIDA")
ALL_STAT_MODELS = (*STEP_STAT_MODELS, "AutoETS")
BACKTEST_ORIGINS = 3
MAX_BACKTEST_ORIGINS = 12  # `omnishelf backtest --origins` goes up to this
SERVICE_LEVEL = 0.95  # of the replay whose KPIs are logged; the trade-off covers SERVICE_LEVELS
SERVICE_LEVELS = (0.8, 0.9, 0.95, 0.98)
MOVING_AVERAGE_DAYS = 28  # history the baseline policy's moving average needs
DEFAULT_LEAD_TIME_DAYS = 2
DASK_CONNECT_TIMEOUT_S = 10
# true_demand: where a dataset knows it (the synthetic one), the replay is scored against it.
FORECAST_INPUTS = [
    "transactions",
    "products",
    "stores",
    "promotions",
    "inventory",
    "calendar",
    "true_demand",
]
# BPR and item-item cosine are weak and slow here: `omnishelf evaluate recommender` shows them.
STEP_BASELINES = (
    "gp_topfreq",
    "gp_topfreq_decay",
    "item_item_bm25",
    "als",
    "popular",
    "popular_in_store",
)
RANKER_SERVICE = "ranker_v1"
FEATURE_INPUTS = ["transactions", "products", "customers", "promotions", "inventory"]
MAX_TRAINING_ROWS = 2_000_000  # series x origins x steps; LightGBM fits 2M rows in ~30 s here


@dataclass
class StepResult:
    step: str
    status: str  # built | reused
    seconds: float
    figures: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Source:
    """A dataset the pipeline can load: its name decides whether stored tables are reused."""

    name: str
    load: Callable[[], dict[str, pd.DataFrame]]
    freq: str
    country: str


def complete_journey_source() -> Source:
    from features import complete_journey

    return Source(
        complete_journey.NAME,
        complete_journey.load_complete_journey,
        complete_journey.FREQ,
        complete_journey.COUNTRY,
    )


def complete_journey_workspace() -> Settings:
    """The default workspace (data/, mlruns/) with Complete Journey loaded and its features
    built, tracked in its MLflow store: what the benchmarks measure on."""
    settings = Settings()
    tracking.configure(
        settings.resolved_tracking_uri, settings.experiment, settings.mlruns_dir / "artifacts"
    )
    ingest(settings, complete_journey_source())
    build_features(settings)
    return settings


def ingest(settings: Settings, source: Source, force: bool = False) -> StepResult:
    """Write the canonical tables unless the same dataset is already there."""
    began = time.perf_counter()
    try:
        if not force and load_info(settings.tables_dir).name == source.name:
            return StepResult("data", "reused", time.perf_counter() - began)
    except FileNotFoundError:
        pass
    ledger = IdentityLedger(settings.identity_dir)
    tables = without_forgotten(source.load(), ledger.forgotten())
    info = save_tables(tables, settings.tables_dir, source.name, source.freq, source.country)
    return StepResult(
        "data", "built", time.perf_counter() - began, {"transactions": info.transactions}
    )


def features_built_from(fingerprint: str) -> str:
    """What the feature tables were computed from: the data and the feature code."""
    return f"{fingerprint} {FEATURE_CODE}"


def require_current_features(settings: Settings) -> None:
    """Commands that many workers run at once read the features but never write them (Feast's
    file registry takes one writer): they ask for a build first when the features are stale."""
    marker = settings.feast_dir / FINGERPRINT_FILE
    info = load_info(settings.tables_dir)
    if not marker.exists() or marker.read_text() != features_built_from(info.fingerprint):
        raise LookupError(
            f"the features in {settings.feast_dir} are missing or older than the data or the "
            "feature code: run `omnishelf features materialize` once, then start the workers"
        )


def build_features(settings: Settings, force: bool = False) -> tuple[StepResult, list]:
    """Feature tables -> Feast offline store; apply definitions; materialise what is new.

    More days of the same history only add rows, and materialising resumes where it ended;
    another dataset, a rewritten history or `force` rebuilds the online store from scratch.
    """
    began = time.perf_counter()
    info = load_info(settings.tables_dir)
    marker = settings.feast_dir / FINGERPRINT_FILE
    current = marker.read_text() if marker.exists() else None
    built_from = features_built_from(info.fingerprint)
    status = "reused"
    if force or current != built_from:
        tables, identity_map, _ = resolved_tables(settings, FEATURE_INPUTS)
        grid = period_grid(tables["transactions"][TS], info.freq)
        panel = demand_panel(
            tables,
            info.freq,
            selected_before=selection_moments(grid, info.freq),
            kept=None if current is None or force else stored_series(settings),
        )
        now = pd.Timestamp.now().floor("s")
        feature_tables = {
            "customer_profile": customer_features(tables),
            "store_daily": store_features(tables),
            "store_product_demand": store_product_features(panel, info.freq, tables),
            "product_profile": product_features(tables),
        }
        extends = current is not None and not force and history_unchanged(settings, feature_tables)
        previous_identities = (
            read_offline_table(settings, "identity_resolution") if extends else None
        )
        feature_tables["identity_resolution"] = identity_features(
            identity_map, previous_identities, now
        )
        if current is not None and not extends:
            reset_feature_store(settings)
        write_offline_tables(settings, feature_tables)
        write_identity_map(settings, identity_map)
        write_atomically(marker, lambda path: path.write_text(built_from))
        status = "built" if not extends else "extended"
    store = open_store(settings)
    apply_definitions(store)
    summaries = materialize(settings, store)
    rows = sum(s.rows for s in summaries)
    return StepResult(
        "features",
        status if rows == 0 or status != "reused" else "built",
        time.perf_counter() - began,
        {"rows materialised": rows},
    ), summaries


def stored_series(settings: Settings) -> pd.MultiIndex | None:
    """The store x product series the stored demand features cover. A later week moves the
    backtest origins (`selection_moments`), and a series chosen only at an origin that has moved
    on would otherwise drop out and force a rebuild instead of an extension."""
    try:
        stored = read_offline_table(settings, "store_product_demand")
    except FileNotFoundError:
        return None
    return pd.MultiIndex.from_frame(stored[[STORE_ID, PRODUCT_ID]].drop_duplicates())


def selection_moments(grid: pd.DatetimeIndex, freq: str) -> list[pd.Timestamp | None]:
    """Every moment a backtest may choose its series at (the origins of up to
    MAX_BACKTEST_ORIGINS windows) and None (all the data, for serving): the demand features
    cover each series one of them chooses, a series that faded since included."""
    horizon = HORIZON_PERIODS[freq]
    n_origins = min(MAX_BACKTEST_ORIGINS, len(grid) // horizon - 1)
    return [*(rolling_origins(grid, n_origins, horizon) if n_origins >= 1 else []), None]


def reset_feature_store(settings: Settings) -> None:
    """A different dataset replaces the online rows and the registry's materialisation history.

    Only this project is removed: FeatureStore.teardown() would delete every project of a shared
    SQL registry.
    """
    store = open_store(settings)
    store._get_provider().teardown_infra(
        settings.feast_project, store.list_feature_views(), store.list_entities()
    )
    if settings.registry_url is None:
        shutil.rmtree(settings.feast_dir, ignore_errors=True)
    else:
        # Views one by one first: only that removes their version history, which a project
        # delete leaves behind and the next apply in the project would collide with.
        for view in store.list_feature_views():
            store.registry.delete_feature_view(view.name, settings.feast_project, commit=True)
        store.registry.delete_project(settings.feast_project, commit=True)


def _reused(step: str, registered_name: str, fingerprint: str, headline: str, began: float):
    """The step's result when the champion was trained on this data (and these decisions on
    customers) by this code, else None."""
    found = tracking.champion_version(registered_name)
    if (
        found is None
        or found.tags.get("dataset_fingerprint") != fingerprint
        or found.tags.get("code_version") != CODE_VERSION
    ):
        return None
    metrics = mlflow.get_run(found.run_id).data.metrics
    return StepResult(step, "reused", time.perf_counter() - began, _headline(metrics, headline))


def holdout_metrics(data: ForecastData, result: Backtest) -> dict[str, float]:
    """The final model and the best baseline on the holdout alone (the last backtest window,
    which no sweep tuned on): the reported figures, and the WRMSSE on which a challenger from a
    sweep is compared with the champion."""
    last = result.scored[result.scored["origin"] == data.holdout]
    table = score_table(last, data.panel, data.info.freq)
    return {
        HOLDOUT_METRIC: float(table.loc[FINAL, "wrmsse"]),
        "holdout_wrmsse_best_stat": float(table.drop(index=FINAL)["wrmsse"].min()),
        "holdout_wape": float(table.loc[FINAL, "wape"]),
        "holdout_p90_coverage": float(table.loc[FINAL, "p90_coverage"]),
    }


def holdout_tags(holdout: str, metric: str, score: float) -> dict[str, str]:
    """Registry tags that let `omnishelf models promote` check two versions met the same test."""
    return {"holdout": holdout, "holdout_metric": metric, metric: str(score)}


def window_params(data: ForecastData) -> dict[str, str]:
    """The run's cut-off dates: the windows a sweep may tune on, and the holdout's start."""
    return {
        "validation_origins": ",".join(f"{o:%Y-%m-%d}" for o in data.origins[:-1]),
        "holdout_start": f"{data.holdout:%Y-%m-%d}",
    }


def cutoff_params(evaluation: Evaluation) -> dict[str, str]:
    """The evaluation's single cut-off T: everything learned from is before it."""
    return {"holdout_cutoff": str(evaluation.holdout.cutoff)}


def registered_name(settings: Settings, family: str) -> str:
    """The registry name of a model family ("recommender" or "forecaster")."""
    return settings.forecaster_name if family == "forecaster" else settings.recommender_name


def run_tags(info: DatasetInfo, fingerprint: str) -> dict[str, str]:
    return {
        "dataset": info.name,
        "dataset_fingerprint": fingerprint,
        "data_window": f"{info.start} .. {info.end}",
        "code_version": CODE_VERSION,
    }


def recommender_metrics(evaluation: Evaluation) -> dict[str, float]:
    """`<model>_<metric>` for every row of the table (all scored on the final window), the
    reminder scores, and the headline of the final model and of the best baseline under
    `holdout_*` and `holdout_best_baseline_*`."""
    metrics = {
        f"{model}_{metric}": float(value)
        for model, row in evaluation.table.drop(columns="customers").iterrows()
        for metric, value in row.items()
    }
    best = evaluation.best_baseline
    for metric in HEADLINE_METRICS:
        metrics[f"holdout_{metric}"] = metrics[f"{FINAL_RECOMMENDER}_{metric}"]
        metrics[f"holdout_best_baseline_{metric}"] = metrics[f"{best}_{metric}"]
    metrics["evaluated_customers"] = len(evaluation.holdout.customers)
    return metrics | evaluation.reminder_scores


def log_recommender_evaluation(evaluation: Evaluation) -> None:
    """The metric table, per-segment results, recall@k curves and feature importances."""
    protocol = evaluation.protocol
    mlflow.log_table(evaluation.table.reset_index(names="model"), f"{protocol}/metrics.json")
    mlflow.log_table(evaluation.segments, f"{protocol}/segments.json")
    mlflow.log_figure(
        plots.recall_curve_figure(RECALL_KS, evaluation.curves, protocol),
        f"{protocol}/recall_at_k.png",
    )
    importance = evaluation.ranker.feature_importance()
    mlflow.log_figure(
        plots.importance_figure(importance, "Ranker feature importance"),
        f"{protocol}/ranker_feature_importance.png",
    )
    mlflow.log_table(
        importance.rename_axis("feature").reset_index(name="gain"),
        f"{protocol}/ranker_feature_importance.json",
    )


def offline_lookup(settings: Settings):
    """Point-in-time `ranker_v1` features for candidate rows, from Feast's offline store."""
    store = open_store(settings)
    return lambda keys: historical_view_features(store, RANKER_SERVICE, keys)


def train_recommender(settings: Settings, force: bool = False) -> StepResult:
    """Generators + ranker scored against the baselines on a 28-day time split; then the ranker
    refit on the newest windows and the generators on all history, and that model registered
    as champion, tagged with the day its data end (`fit_until`) and the run whose figures
    describe it (`metrics_of`: this run's, from the ranker learned before the cut-off).
    Customers on the forget queue are left out, and taken off it once the champion is
    registered."""
    began = time.perf_counter()
    info = load_info(settings.tables_dir)
    _, fingerprint = resolution(settings)
    forgotten = pending_removals(settings.identity_dir)[CUSTOMER_ID].tolist()
    if not force and (
        reused := _reused(
            "recommender", settings.recommender_name, fingerprint, RECOMMENDER_HEADLINE, began
        )
    ):
        # The champion was trained on these decisions on customers, forgets included.
        clear_removals(settings.identity_dir, forgotten)
        return reused
    tables = resolved_tables(settings, ["transactions", "products"])[0]
    # Forget already removed them from the tables; the queue makes sure of it.
    sales = tables["transactions"]
    tables["transactions"] = sales[~sales[CUSTOMER_ID].isin(forgotten)]
    evaluation = evaluate_protocol(
        tables["transactions"],
        tables["products"],
        "time_split",
        offline_lookup(settings),
        STEP_BASELINES,
        progress=True,
        refit=True,
    )
    metrics = recommender_metrics(evaluation)
    refit = evaluation.refit
    fit_until = {"fit_until": f"{refit.fit_until:%Y-%m-%d}"}
    with mlflow.start_run(run_name="recommender") as run:
        mlflow.set_tags(
            {
                **run_tags(info, fingerprint),
                "model_family": "recommender",
                "protocol": "time_split",
                "holdout_window": evaluation.holdout.window,
                "best_baseline": evaluation.best_baseline,
            }
            | fit_until
        )
        mlflow.log_params(
            {f"ranker_{k}": v for k, v in evaluation.ranker.params.items()}
            | {f"pool_{k}": v for k, v in POOL_SIZES.items()}
            | {"num_boost_round": evaluation.ranker.num_boost_round, "test_days": TEST_DAYS}
            | cutoff_params(evaluation)
        )
        mlflow.log_metrics(metrics)
        log_recommender_evaluation(evaluation)
        served = NextBestProduct(refit.ranker, refit.reminders).fit(
            tables["transactions"], tables["products"]
        )
        registered = tracking.register(
            served,
            settings.recommender_name,
            run_tags(info, fingerprint)
            | holdout_tags(
                evaluation.holdout.window,
                RECOMMENDER_HOLDOUT_METRIC,
                metrics[RECOMMENDER_HOLDOUT_METRIC],
            )
            | {"serving_rules": json.dumps(SERVING_RULES), "model_family": "recommender"}
            | fit_until
            | {"metrics_of": run.info.run_id},
        )
    clear_removals(settings.identity_dir, forgotten)
    return StepResult(
        "recommender",
        f"built v{registered}",
        time.perf_counter() - began,
        _headline(metrics, RECOMMENDER_HEADLINE),
    )


def evaluate_recommender(settings: Settings, protocols: list[str]) -> list[Evaluation]:
    """Both protocols with every baseline on the workspace's dataset, one MLflow run each."""
    info = load_info(settings.tables_dir)
    _, fingerprint = resolution(settings)
    tables = resolved_tables(settings, ["transactions", "products"])[0]
    lookup = offline_lookup(settings)
    evaluations = []
    for protocol in protocols:
        evaluation = evaluate_protocol(
            tables["transactions"],
            tables["products"],
            protocol,
            lookup,
            progress=True,
        )
        with mlflow.start_run(run_name=f"recommender-evaluation-{protocol}"):
            mlflow.set_tags(
                run_tags(info, fingerprint)
                | {
                    "model_family": "recommender",
                    "protocol": protocol,
                    "holdout_window": evaluation.holdout.window,
                    "best_baseline": evaluation.best_baseline,
                }
            )
            mlflow.log_params(cutoff_params(evaluation))
            mlflow.log_metrics(recommender_metrics(evaluation))
            log_recommender_evaluation(evaluation)
        evaluations.append(evaluation)
    return evaluations


@dataclass
class ForecastData:
    """What training and backtesting the forecaster read: the panel of the active series, their
    demand features at every origin and review day, and the tables behind them."""

    info: DatasetInfo
    tables: dict[str, pd.DataFrame]
    panel: pd.DataFrame
    keys: pd.DataFrame  # store_id, product_id of each series, the panel's order
    features: pd.DataFrame
    origins: list[pd.Timestamp]  # backtest origins; the last is the holdout's
    reviews: list[pd.Timestamp]  # weekly restock reviews replayed over the backtest windows

    @property
    def holdout(self) -> pd.Timestamp:
        """Start of the final window: no design choice or sweep sees it, the reported figures
        come from it."""
        return self.origins[-1]

    def before_holdout(self) -> ForecastData:
        """The same data cut before the holdout (its periods, feature stamps, dated table rows,
        origin and reviews left out): all that a sweep may tune on."""
        cut = self.holdout
        tables = dict(self.tables)
        for name, column in (("transactions", TS), ("inventory", DATE), ("true_demand", DATE)):
            if name in tables:
                tables[name] = tables[name][tables[name][column] < cut]
        data = ForecastData(
            self.info,
            tables,
            self.panel[self.panel[PERIOD] < cut].reset_index(drop=True),
            self.keys,
            self.features[self.features[EVENT_TIMESTAMP] < cut].reset_index(drop=True),
            self.origins[:-1],
            [review for review in self.reviews if review < cut],
        )
        # Promotions are planned ahead: their counts are known before the holdout.
        data.__dict__["promotion_breadth"] = self.promotion_breadth
        return data

    def series_at(self, origin: pd.Timestamp) -> pd.DataFrame:
        """store_id, product_id of the series chosen on the sales before `origin`."""
        chosen = active_before(self.panel, origin)
        return chosen[[STORE_ID, PRODUCT_ID]].drop_duplicates().reset_index(drop=True)

    @cached_property
    def promotion_breadth(self) -> PromotionBreadth:
        """What else is promoted, counted once for every fit on this data: the backtest's
        origins and the final fit (each count reads the whole promotions table)."""
        return _forecaster(self).promotion_breadth(
            self.features, self.panel, self.tables.get("promotions"), self.tables.get("products")
        )


def forecast_data(settings: Settings, n_origins: int = BACKTEST_ORIGINS) -> ForecastData:
    """The panel, its backtest origins and the Feast point-in-time features they need."""
    info = load_info(settings.tables_dir)
    tables = resolved_tables(settings, FORECAST_INPUTS)[0]
    horizon = HORIZON_PERIODS[info.freq]
    grid = period_grid(tables["transactions"][TS], info.freq)
    origins = rolling_origins(grid, n_origins, horizon)
    # Which series are scored must not depend on the windows' own sales: the backtest chooses
    # each origin's series on the sales before it; the panel holds every series chosen once.
    panel = demand_panel(tables, info.freq, selected_before=origins)
    keys = panel[[STORE_ID, PRODUCT_ID]].drop_duplicates().reset_index(drop=True)
    end = grid[-1] + pd.Timedelta(days=PERIOD_DAYS[info.freq])
    reviews = list(pd.date_range(origins[0], end - pd.Timedelta(days=REVIEW_DAYS), freq="7D"))
    stride = origin_stride(len(keys), len(grid), horizon)
    stamps = (
        pd.DatetimeIndex(grid[MIN_HISTORY_PERIODS::stride])
        .append(pd.DatetimeIndex([*origins, *reviews, end]))
        .unique()
        .sort_values()
    )
    features = historical_features(
        open_store(settings),
        "demand_v1",
        keys.merge(pd.DataFrame({EVENT_TIMESTAMP: stamps}), how="cross"),
    )
    return ForecastData(info, tables, panel, keys, features, origins, reviews)


def _forecaster(data: ForecastData) -> DemandForecaster:
    return DemandForecaster(data.info.freq, data.info.country)


@contextmanager
def dask_client(settings: Settings):
    """A client of the Dask scheduler the settings name, or None: train in this process."""
    if settings.dask_scheduler is None:
        yield None
        return
    from distributed import Client

    try:
        client = Client(settings.dask_scheduler, timeout=DASK_CONNECT_TIMEOUT_S)
    except (OSError, TimeoutError) as error:
        raise LookupError(
            f"Dask scheduler {settings.dask_scheduler} (OMNISHELF_DASK_SCHEDULER) unreachable: "
            f"{error}"
        ) from error
    with client:
        yield client


def forecast_backtest(
    data: ForecastData,
    stat_models: tuple[str, ...],
    service_levels: tuple[float, ...] = SERVICE_LEVELS,
    progress: Callable[[str], None] | None = None,
    client=None,
) -> tuple[Backtest, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Rolling-origin backtest, then the restock replay over the same windows.

    Returns:
        The backtest; the replay at SERVICE_LEVEL (omnishelf vs the baseline at matched stock);
        the replay at every service level, for the stock vs stockout trade-off; and the
        policy's replay at SERVICE_LEVEL per series (store_id, product_id, stockout_days, ...).
    """
    promotions, calendar = data.tables.get("promotions"), data.tables.get("calendar")
    result = backtest(
        lambda: _forecaster(data),
        data.panel,
        data.features,
        data.info.freq,
        data.origins,
        promotions,
        calendar,
        stat_models,
        progress,
        client,
        data.tables.get("products"),
        data.promotion_breadth,
    )
    # The replay runs from the first origin: its series are the ones chosen on the sales before
    # it, those that fade later included.
    keys = data.series_at(data.origins[0])
    lead = _lead_times(data.tables, keys)
    mean, std = cover_demand(result, data.features, keys, data.reviews, lead, promotions, calendar)
    history_days = MOVING_AVERAGE_DAYS
    first = data.origins[0] - pd.Timedelta(days=history_days)
    demand = daily_demand(data.tables, keys, first, history_days + len(data.reviews) * REVIEW_DAYS)
    by_level = {
        level: replay_restock(policy_order_up_to(mean, std, level), demand, history_days, lead)
        for level in service_levels
    }
    trade_off = pd.concat(
        {level: table for level, (table, _) in by_level.items()}, names=["service_level"]
    ).reset_index()
    simulation, by_series = by_level[SERVICE_LEVEL]
    by_series = pd.concat([keys, by_series], axis=1)
    return result, simulation, trade_off, by_series


def _lead_times(tables: dict[str, pd.DataFrame], keys: pd.DataFrame) -> np.ndarray:
    stores = tables["stores"].set_index(STORE_ID)["lead_time_days"]
    return stores.reindex(keys[STORE_ID]).fillna(DEFAULT_LEAD_TIME_DAYS).to_numpy(dtype=float)


def forecaster_metrics(result: Backtest, simulation: pd.DataFrame) -> dict[str, float]:
    """The backtest table and the replay as flat metric names, the same on every run."""
    table = result.table
    stats = table.drop(index=FINAL)
    best_stat = stats["wrmsse"].idxmin()
    metrics = {
        f"{column}_{model}": float(value)
        for model, row in table.iterrows()
        for column, value in row.items()
        if column != "origins" and pd.notna(value)
    }
    policy, baseline = simulation.loc[FINAL], simulation.drop(index=FINAL).iloc[0]
    metrics |= {
        "wrmsse_final": float(table.loc[FINAL, "wrmsse"]),
        "wrmsse_best_stat": float(stats.loc[best_stat, "wrmsse"]),
        "p90_coverage": float(table.loc[FINAL, "p90_coverage"]),
        "stockout_rate_policy": float(policy["stockout_rate"]),
        "stockout_rate_baseline": float(baseline["stockout_rate"]),
        "stockout_rate_ratio": float(policy["stockout_rate"] / baseline["stockout_rate"])
        if baseline["stockout_rate"] > 0
        else math.nan,
        "avg_on_hand_policy": float(policy["avg_on_hand"]),
        "avg_on_hand_baseline": float(baseline["avg_on_hand"]),
        "fill_rate_policy": float(policy["fill_rate"]),
        "fill_rate_baseline": float(baseline["fill_rate"]),
        "inventory_turns_policy": float(policy["inventory_turns"]),
        "inventory_turns_baseline": float(baseline["inventory_turns"]),
        "order_up_to_coverage_policy": float(policy["order_up_to_coverage"]),
        "order_up_to_coverage_baseline": float(baseline["order_up_to_coverage"]),
        "baseline_cover_days": float(baseline["cover_days"]),
    }
    return metrics | {"best_stat_name": best_stat}


def log_forecaster_backtest(
    data: ForecastData,
    result: Backtest,
    simulation: pd.DataFrame,
    trade_off: pd.DataFrame,
    by_series: pd.DataFrame,
) -> dict:
    """Metrics, tables and figures of one backtest in the active MLflow run."""
    metrics = forecaster_metrics(result, simulation)
    mlflow.log_metrics({k: v for k, v in metrics.items() if isinstance(v, float) and v == v})
    mlflow.set_tags(
        {
            "best_stat_name": metrics["best_stat_name"],
            "backtest_origins": ",".join(f"{o:%Y-%m-%d}" for o in data.origins),
            "service_level": str(SERVICE_LEVEL),
        }
    )
    mlflow.log_table(result.table.reset_index(), "backtest_table.json")
    mlflow.log_table(simulation.reset_index(), "inventory_simulation.json")
    mlflow.log_table(trade_off, "stock_vs_stockouts.json")
    mlflow.log_table(by_series, REPLAY_BY_SERIES)
    last = data.origins[-1]
    scored = result.scored[result.scored["origin"] == last]
    history = data.panel[
        (data.panel[PERIOD] < last)
        & (data.panel[PERIOD] >= last - pd.Timedelta(days=PERIOD_DAYS[data.info.freq] * 20))
    ]
    mlflow.log_figure(
        plots.forecast_figure(
            history,
            scored[scored["model"] == FINAL],
            scored[scored["model"] == "seasonal_naive"],
        ),
        "forecast_vs_actual.png",
    )
    mlflow.log_figure(plots.trade_off_figure(trade_off), "stock_vs_stockouts.png")
    return metrics


def train_forecaster(settings: Settings, force: bool = False) -> StepResult:
    """Backtest on rolling origins (forecast accuracy, restock replay), then fit on all data and
    register; every run logs the accuracy table and the business KPIs."""
    began = time.perf_counter()
    _, fingerprint = resolution(settings)
    if not force and (
        reused := _reused(
            "forecaster", settings.forecaster_name, fingerprint, FORECASTER_HEADLINE, began
        )
    ):
        return reused
    data = forecast_data(settings)
    with dask_client(settings) as client, mlflow.start_run(run_name="forecaster"):
        model = _forecaster(data)
        mlflow.set_tags(
            {
                **run_tags(data.info, fingerprint),
                "model_family": "forecaster",
                "freq": model.freq,
                "trained_on": f"dask {client.scheduler.address}" if client else "local",
            }
        )
        mlflow.log_params(
            model.params
            | {"num_boost_round": model.num_boost_round, "horizon": model.horizon}
            | window_params(data)
        )
        result, simulation, trade_off, by_series = forecast_backtest(
            data, STEP_STAT_MODELS, client=client
        )
        metrics = log_forecaster_backtest(data, result, simulation, trade_off, by_series)
        on_holdout = holdout_metrics(data, result)
        mlflow.log_metrics(on_holdout)
        metrics |= on_holdout
        holdout = on_holdout[HOLDOUT_METRIC]
        promotions, calendar = data.tables.get("promotions"), data.tables.get("calendar")
        final = model.fit(
            data.features,
            data.panel,
            promotions,
            calendar,
            data.tables.get("products"),
            client,
            data.promotion_breadth,
        )
        mlflow.log_metrics({"series": len(data.keys), "training_rows": final.training_rows_})
        mlflow.log_figure(
            plots.importance_figure(final.feature_importance()), "feature_importance.png"
        )
        registered = tracking.register(
            final,
            settings.forecaster_name,
            run_tags(data.info, fingerprint)
            | holdout_tags(f"{data.origins[-1]:%Y-%m-%d}", HOLDOUT_METRIC, holdout)
            | {"model_family": "forecaster"},
        )
    return StepResult(
        "forecaster",
        f"built v{registered}",
        time.perf_counter() - began,
        _headline(metrics, FORECASTER_HEADLINE),
    )


def run_backtest(
    settings: Settings,
    n_origins: int = BACKTEST_ORIGINS,
    progress: Callable[[str], None] | None = None,
) -> tuple[Backtest, pd.DataFrame, pd.DataFrame]:
    """`omnishelf backtest`: every baseline, AutoETS included, on `n_origins` rolling origins,
    and the restock replay; logged as one MLflow run."""
    data = forecast_data(settings, n_origins)
    _, fingerprint = resolution(settings)
    with dask_client(settings) as client, mlflow.start_run(run_name="forecaster-backtest"):
        mlflow.set_tags(
            {**run_tags(data.info, fingerprint), "model_family": "forecaster", "kind": "backtest"}
        )
        result, simulation, trade_off, by_series = forecast_backtest(
            data, ALL_STAT_MODELS, progress=progress, client=client
        )
        log_forecaster_backtest(data, result, simulation, trade_off, by_series)
        mlflow.log_params(window_params(data))
        mlflow.log_metrics(holdout_metrics(data, result))
    return result, simulation, trade_off


def read_stock_file(path: Path) -> pd.DataFrame:
    """store_id, product_id, on_hand and optional on_order from a CSV or parquet file; errors
    name the file and the column."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such stock file")
    parquet = path.suffix == ".parquet"
    try:
        frame = pd.read_parquet(path) if parquet else pd.read_csv(path)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, OSError, ValueError) as error:
        kind = "parquet" if parquet else "CSV"
        raise UserInputError(f"{path}: not a readable {kind} file: {error}") from error
    if frame.empty:
        raise UserInputError(f"{path}: the stock file has no rows")
    # Where a user finds the row: CSV lines count the header; parquet rows start at 1.
    first_row = 1 if parquet else 2
    for column in (STORE_ID, PRODUCT_ID, "on_hand"):
        if column not in frame:
            raise UserInputError(f"{path}: missing column {column!r}")
    if "on_order" not in frame:
        frame["on_order"] = 0.0
    for column in ("on_hand", "on_order"):
        values = pd.to_numeric(frame[column], errors="coerce")
        if values.isna().any() or (values < 0).any():
            row = int(np.flatnonzero(values.isna() | (values < 0))[0])
            raise UserInputError(
                f"{path}: column {column!r} needs numbers >= 0; row {row + first_row} has "
                f"{frame[column].iloc[row]!r}"
            )
        frame[column] = values.astype(float)
    repeated = frame.duplicated([STORE_ID, PRODUCT_ID])
    if repeated.any():
        row = int(np.flatnonzero(repeated)[0])
        raise UserInputError(
            f"{path}: store_id, product_id repeat on row {row + first_row}: one stock level per "
            "store x product"
        )
    return frame[[STORE_ID, PRODUCT_ID, "on_hand", "on_order"]]


def restock_orders(
    settings: Settings,
    as_of: dt.date | None = None,
    service_level: float = SERVICE_LEVEL,
    stock_file: Path | None = None,
) -> tuple[pd.DataFrame, pd.Timestamp]:
    """Order lines for every active store x product of the champion forecaster, forecast from
    the newest materialised day (or `as_of`, see `training.forecast_plan.origin_stamp`) with the
    promotions and calendar the tables hold now, ordered the morning after it; stock from
    `stock_file`, else the inventory snapshot of that morning, else 0 (flagged `stock_known`
    False).

    Returns:
        The order lines and the order day (the day after the origin).
    """
    from features.repo.definitions import store_product_demand

    # A bad stock file is named before the (slow) model load.
    given = read_stock_file(stock_file) if stock_file is not None else None
    model, _ = tracking.load_champion(settings.forecaster_name)
    store = open_store(settings)
    newest = data_clock(store, [store_product_demand.name])
    if newest is None:
        raise LookupError(
            "no demand features were materialised: run `omnishelf features materialize`"
        )
    try:
        date = origin_stamp(
            as_of, pd.Timestamp(newest).floor("D"), model.history_start_, model.freq
        )
    except UserInputError as error:
        raise UserInputError(f"--as-of: {error}") from error
    tables = load_tables(settings.tables_dir, ["products", "stores", "inventory"])
    keys = model.series_.to_frame(index=False)
    at = historical_features(store, "demand_v1", keys.assign(**{EVENT_TIMESTAMP: date}))
    if given is not None:
        stock = given
    elif "inventory" in tables:
        snapshot = tables["inventory"]
        stock = snapshot.loc[snapshot[DATE] == date, [STORE_ID, PRODUCT_ID, "on_hand"]]
    else:
        stock = pd.DataFrame({STORE_ID: [], PRODUCT_ID: [], "on_hand": []}, dtype=float)
    at = at.merge(stock, on=[STORE_ID, PRODUCT_ID], how="left")
    at["stock_known"] = at["on_hand"].notna()
    at["on_hand"] = at["on_hand"].fillna(0.0)
    at["on_order"] = at["on_order"].fillna(0.0) if "on_order" in at else 0.0
    at["lead_time_days"] = _lead_times(tables, keys)
    # Catalogues saved before packs were part of the contract order single units.
    products = tables["products"].set_index(PRODUCT_ID)
    for column, default in (("pack_size", 1), ("min_order_qty", 0)):
        known = products[column] if column in products else pd.Series(dtype=float)
        at[column] = known.reindex(at[PRODUCT_ID]).fillna(default).to_numpy()
    plan = read_plan(settings.tables_dir, keys[PRODUCT_ID].to_numpy(), model.country)
    orders = plan_orders(model, at, service_level, plan)
    orders["stock_known"] = at["stock_known"].to_numpy()
    orders.insert(0, "order_date", date.date())
    return orders, date


def write_orders(orders: pd.DataFrame, path: Path) -> None:
    write_atomically(path, lambda partial: orders.to_csv(partial, index=False))


def origin_stride(n_series: int, n_periods: int, horizon: int) -> int:
    """Every how many periods to take a training origin so that rows stay under
    MAX_TRAINING_ROWS; never a multiple of 7, so daily origins cycle through the weekdays."""
    stride = max(1, math.ceil(n_series * n_periods * horizon / MAX_TRAINING_ROWS))
    return stride + 1 if stride % 7 == 0 else stride


def _headline(metrics: dict, keys: tuple[str, ...]) -> dict:
    return {k: round(metrics[k], 4) for k in keys if k in metrics}


def write_results(path, figures: dict) -> None:
    write_atomically(path, lambda partial: partial.write_text(json.dumps(figures, indent=2) + "\n"))
