"""The steps of the pipeline: ingest -> features -> train (+ evaluate, register).

Each step is idempotent: it reuses what an earlier run built for the same data and code, and a
`force` flag rebuilds.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import version

import mlflow
import numpy as np
import pandas as pd

from features.contract import PRODUCT_ID, STORE_ID
from features.dataset import DatasetInfo, load_info, save_tables, write_atomically
from features.engineering import (
    EVENT_TIMESTAMP,
    MIN_ACTIVE_SHARE,
    PERIOD,
    PERIOD_DAYS,
    UNITS,
    customer_features,
    demand_panel,
    product_features,
    store_features,
    store_product_features,
)
from features.feature_store import (
    apply_definitions,
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
from features.settings import Settings
from training import plots, tracking
from training.evaluation import RECALL_KS, TEST_DAYS
from training.forecaster import DemandForecaster, seasonal_naive
from training.metrics import bias, wape
from training.ranker import POOL_SIZES
from training.recommender import (
    HEADLINE_METRICS,
    SERVING_RULES,
    Evaluation,
    NextBestProduct,
    evaluate_protocol,
)

log = logging.getLogger(__name__)

CODE_VERSION = version("omnishelf")
FINGERPRINT_FILE = "offline/dataset_fingerprint"
MIN_HISTORY_PERIODS = 4  # origins before this have too little history to learn from
# Metrics shown in summaries and demo.json.
RECOMMENDER_HEADLINE = ("omnishelf_recall_at_10", "best_baseline_recall_at_10")
FORECASTER_HEADLINE = ("forecast_wape", "snaive_wape")
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


def build_features(settings: Settings, force: bool = False) -> tuple[StepResult, list]:
    """Feature tables -> Feast offline store; apply definitions; materialise what is new.

    More days of the same history only add rows, and materialising resumes where it ended;
    another dataset, a rewritten history or `force` rebuilds the online store from scratch.
    """
    began = time.perf_counter()
    info = load_info(settings.tables_dir)
    marker = settings.feast_dir / FINGERPRINT_FILE
    current = marker.read_text() if marker.exists() else None
    status = "reused"
    if force or current != info.fingerprint:
        tables, identity_map, _ = resolved_tables(settings, FEATURE_INPUTS)
        panel = demand_panel(tables, info.freq)
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
        write_atomically(marker, lambda path: path.write_text(info.fingerprint))
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


def _run_tags(info: DatasetInfo, fingerprint: str) -> dict[str, str]:
    return {
        "dataset": info.name,
        "dataset_fingerprint": fingerprint,
        "data_window": f"{info.start} .. {info.end}",
        "code_version": CODE_VERSION,
    }


def recommender_metrics(evaluation: Evaluation) -> dict[str, float]:
    """`<model>_<metric>` for every row of the table, the reminder scores and the best baseline's
    headline under `best_baseline_*`."""
    metrics = {
        f"{model}_{metric}": float(value)
        for model, row in evaluation.table.drop(columns="customers").iterrows()
        for metric, value in row.items()
    }
    best = evaluation.best_baseline
    for metric in HEADLINE_METRICS:
        metrics[f"best_baseline_{metric}"] = metrics[f"{best}_{metric}"]
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
    """Generators + ranker scored against the baselines on a 28-day time split, then the
    generators refit on all history and the model registered as champion."""
    began = time.perf_counter()
    info = load_info(settings.tables_dir)
    _, fingerprint = resolution(settings)
    if not force and (
        reused := _reused(
            "recommender", settings.recommender_name, fingerprint, RECOMMENDER_HEADLINE, began
        )
    ):
        return reused
    tables = resolved_tables(settings, ["transactions", "products"])[0]
    evaluation = evaluate_protocol(
        tables["transactions"],
        tables["products"],
        "time_split",
        offline_lookup(settings),
        STEP_BASELINES,
        progress=True,
    )
    metrics = recommender_metrics(evaluation)
    with mlflow.start_run(run_name="recommender"):
        mlflow.set_tags(
            {
                **_run_tags(info, fingerprint),
                "model_family": "recommender",
                "protocol": "time_split",
                "holdout_window": evaluation.holdout.window,
                "best_baseline": evaluation.best_baseline,
            }
        )
        mlflow.log_params(
            {f"ranker_{k}": v for k, v in evaluation.ranker.params.items()}
            | {f"pool_{k}": v for k, v in POOL_SIZES.items()}
            | {"num_boost_round": evaluation.ranker.num_boost_round, "test_days": TEST_DAYS}
        )
        mlflow.log_metrics(metrics)
        log_recommender_evaluation(evaluation)
        served = NextBestProduct(evaluation.ranker, evaluation.reminders).fit(
            tables["transactions"], tables["products"]
        )
        registered = tracking.register(
            served,
            settings.recommender_name,
            _run_tags(info, fingerprint) | {"serving_rules": json.dumps(SERVING_RULES)},
        )
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
                _run_tags(info, fingerprint)
                | {
                    "model_family": "recommender",
                    "protocol": protocol,
                    "holdout_window": evaluation.holdout.window,
                    "best_baseline": evaluation.best_baseline,
                }
            )
            mlflow.log_metrics(recommender_metrics(evaluation))
            log_recommender_evaluation(evaluation)
        evaluations.append(evaluation)
    return evaluations


def train_forecaster(settings: Settings, force: bool = False) -> StepResult:
    """LightGBM on Feast point-in-time features; scored on the last horizon it never saw."""
    began = time.perf_counter()
    info = load_info(settings.tables_dir)
    _, fingerprint = resolution(settings)
    if not force and (
        reused := _reused(
            "forecaster", settings.forecaster_name, fingerprint, FORECASTER_HEADLINE, began
        )
    ):
        return reused
    tables = resolved_tables(settings, ["transactions", "products"])[0]
    panel = demand_panel(tables, info.freq)
    model = DemandForecaster(info.freq, info.country)
    grid = np.sort(panel[PERIOD].unique())
    if len(grid) < MIN_HISTORY_PERIODS + 2 * model.horizon:
        raise ValueError(
            f"{len(grid)} periods of data are too few for a {model.horizon}-period holdout; "
            f"need at least {MIN_HISTORY_PERIODS + 2 * model.horizon}"
        )
    cutoff = pd.Timestamp(grid[-model.horizon])
    panel = active_before(panel, cutoff)
    series = panel[[STORE_ID, PRODUCT_ID]].drop_duplicates()
    origins = grid[MIN_HISTORY_PERIODS :: origin_stride(len(series), len(grid), model.horizon)]
    store = open_store(settings)
    at_origins = historical_features(
        store, "demand_v1", series.merge(pd.DataFrame({EVENT_TIMESTAMP: origins}), how="cross")
    )
    train_rows = at_origins[at_origins[EVENT_TIMESTAMP] < cutoff]
    model.fit(train_rows, panel[panel[PERIOD] < cutoff])
    at_cutoff = historical_features(store, "demand_v1", series.assign(**{EVENT_TIMESTAMP: cutoff}))
    holdout = model.predict(at_cutoff).merge(panel, on=[STORE_ID, PRODUCT_ID, PERIOD])
    baseline = seasonal_naive(panel, cutoff, info.freq, model.horizon).merge(
        panel, on=[STORE_ID, PRODUCT_ID, PERIOD]
    )
    metrics = {
        "forecast_wape": wape(holdout[UNITS], holdout["forecast"]),
        "forecast_bias": bias(holdout[UNITS], holdout["forecast"]),
        "snaive_wape": wape(baseline[UNITS], baseline["forecast"]),
        "series": len(series),
        "training_rows": model.training_rows_,
    }
    with mlflow.start_run(run_name="forecaster"):
        mlflow.set_tags(
            {
                **_run_tags(info, fingerprint),
                "model_family": "forecaster",
                "freq": info.freq,
                "holdout_start": str(cutoff),
            }
        )
        mlflow.log_params(
            model.params | {"num_boost_round": model.num_boost_round, "horizon": model.horizon}
        )
        mlflow.log_metrics(metrics)
        history = panel[
            (panel[PERIOD] < cutoff)
            & (panel[PERIOD] >= cutoff - pd.Timedelta(days=PERIOD_DAYS[info.freq] * 20))
        ]
        mlflow.log_figure(
            plots.forecast_figure(history, holdout, baseline), "forecast_vs_actual.png"
        )
        mlflow.log_figure(
            plots.importance_figure(model.feature_importance()), "feature_importance.png"
        )
        final = DemandForecaster(info.freq, info.country, params=model.params).fit(
            at_origins, panel
        )
        registered = tracking.register(
            final, settings.forecaster_name, _run_tags(info, fingerprint)
        )
    return StepResult(
        "forecaster",
        f"built v{registered}",
        time.perf_counter() - began,
        _headline(metrics, FORECASTER_HEADLINE),
    )


def active_before(
    panel: pd.DataFrame, cutoff: pd.Timestamp, share: float = MIN_ACTIVE_SHARE
) -> pd.DataFrame:
    """Keep the series that sold in `share` of the periods before the holdout, so that which
    series are scored does not depend on the holdout's own sales."""
    before = panel[panel[PERIOD] < cutoff]
    selling = (before[UNITS] > 0).groupby([before[STORE_ID], before[PRODUCT_ID]]).mean()
    kept = selling.index[selling >= share]
    keys = pd.MultiIndex.from_frame(panel[[STORE_ID, PRODUCT_ID]])
    return panel[keys.isin(kept)]


def origin_stride(n_series: int, n_periods: int, horizon: int) -> int:
    """Every how many periods to take a training origin so that rows stay under
    MAX_TRAINING_ROWS; never a multiple of 7, so daily origins cycle through the weekdays."""
    stride = max(1, math.ceil(n_series * n_periods * horizon / MAX_TRAINING_ROWS))
    return stride + 1 if stride % 7 == 0 else stride


def _headline(metrics: dict, keys: tuple[str, ...]) -> dict:
    return {k: round(metrics[k], 4) for k in keys if k in metrics}


def write_results(path, figures: dict) -> None:
    write_atomically(path, lambda partial: partial.write_text(json.dumps(figures, indent=2) + "\n"))
