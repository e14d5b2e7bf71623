"""Optuna sweeps, run comparison and promotion: experiments a team can launch, review and ship.

A sweep tunes on validation windows (the time windows before the last one) and keeps the last
window as the holdout on which champion and challenger are compared. Every trial is a nested
MLflow run under one parent; the study lives in Optuna's RDB storage, so the same command started
on several processes or machines adds trials to one study.
"""

from __future__ import annotations

import getpass
import json
import math
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import mlflow
import numpy as np
import optuna
import pandas as pd
import sqlalchemy.exc
import tenacity
from mlflow import MlflowClient

from features.contract import TS
from features.dataset import load_info
from features.errors import UserInputError
from features.identity import resolution
from features.redaction import redact_uri
from features.settings import Settings
from pipelines import steps
from training import tracking
from training.backtest import FINAL, backtest
from training.evaluation import TEST_DAYS, split
from training.forecaster import DemandForecaster
from training.metrics import recall_at_k
from training.recommender import (
    SERVING_RULES,
    TRAINING_HOLDOUTS,
    NextBestProduct,
    earlier_holdouts,
    fit_ranker,
    ranked_lists,
    window_rows,
)
from training.sweeps import (
    forecaster_defaults,
    forecaster_from,
    forecaster_space,
    ranker_from,
    recommender_defaults,
    recommender_space,
)

CHALLENGER = "challenger"
# Which metric decides a promotion, and which way is better, by model family.
GATES = {
    "forecaster": (steps.HOLDOUT_METRIC, "min"),
    "recommender": (steps.RECOMMENDER_HOLDOUT_METRIC, "max"),
}
PRUNER_STARTUP_TRIALS = 5
PROTOCOL = "time_split"  # the recommender's, as in `omnishelf train`
VALIDATION_WINDOWS = 2  # recommender: time-split windows before the holdout that trials score on


@dataclass
class Tuning:
    """What a sweep of one model family needs. Trials score a configuration on the validation
    windows one at a time (the pruner's steps); the best is scored on the holdout, which no
    trial saw, and registered."""

    family: str
    space: Callable[[optuna.Trial], dict]
    defaults: dict  # the untuned configuration, the study's first trial
    direction: str  # "minimize" or "maximize"
    score_name: str  # validation_<metric>, the mean over the windows scored so far
    windows: int
    score: Callable[[dict, int], float]  # configuration, validation window -> score
    holdout_metric: str  # the promotion gate's metric, logged under the same name on champions
    holdout_score: Callable[[dict], float]
    register: Callable[[dict, dict[str, str]], str]  # configuration, tags -> challenger version
    tags: dict[str, str]  # data window, fingerprint, code version, validation windows, holdout


@dataclass
class SweepResult:
    study: optuna.Study
    score_name: str
    default_score: float | None  # the untuned configuration's validation score, if it ran
    best_score: float
    best_params: dict
    holdout_metric: str
    holdout_score: float  # the best configuration refit before the holdout, scored on it
    registered: str | None  # the challenger version, None when another worker registered it
    seconds: float
    parent_run_id: str


@tenacity.retry(
    retry=tenacity.retry_if_exception_type(sqlalchemy.exc.DBAPIError),
    stop=tenacity.stop_after_attempt(3),
    wait=tenacity.wait_incrementing(start=0.5, increment=0.5),
    reraise=True,
)
def open_storage(url: str) -> optuna.storages.RDBStorage:
    """Optuna's storage at `url`. Workers started together on a new database race to create
    its tables, and PostgreSQL refuses the loser's `CREATE TYPE`: by then the tables exist, so
    the loser tries again (3 attempts, 0.5 then 1 s apart; the last error is raised)."""
    return optuna.storages.RDBStorage(url)


def _open_study(name: str, storage, seed: int, tuning: Tuning) -> optuna.Study:
    """Create the study, or join it if another worker did. Creating is atomic in the storage
    (the name is unique), so exactly one worker enqueues the default configuration and draws
    from `seed`; the others draw from seeds of their own, or they would propose the same
    startup trials."""
    pruner = optuna.pruners.MedianPruner(n_startup_trials=PRUNER_STARTUP_TRIALS)
    try:
        study = optuna.create_study(
            study_name=name,
            storage=storage,
            direction=tuning.direction,
            sampler=optuna.samplers.TPESampler(seed=seed),
            pruner=pruner,
        )
    except optuna.exceptions.DuplicatedStudyError:
        worker = hash((socket.gethostname(), os.getpid())) % 100_000
        study = optuna.load_study(
            study_name=name,
            storage=storage,
            sampler=optuna.samplers.TPESampler(seed=seed + 1 + worker),
            pruner=pruner,
        )
    else:
        study.set_user_attr("model_family", tuning.family)
        study.enqueue_trial(tuning.defaults, user_attrs={"default": True})
    return study


def _require_family(name: str, storage, family: str) -> None:
    """Refuse to add trials of one model family to another's study, before any work."""
    try:
        existing = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        return  # no such study yet
    other = existing.user_attrs.get("model_family", family)
    if other != family:
        raise UserInputError(f"study {name} tunes the {other}: name another study")


def trial_table(study: optuna.Study) -> pd.DataFrame:
    rows = [
        {"trial": t.number, "state": t.state.name, "score": t.value, **t.params}
        for t in study.trials
        if t.state != optuna.trial.TrialState.RUNNING
    ]
    return pd.DataFrame(rows)


def forecaster_tuning(settings: Settings, threads: int, fingerprint: str) -> Tuning:
    """`forecaster_tuning_on` the workspace's forecast data; `fingerprint`: the resolved data's,
    which the sweep already has."""
    data = steps.forecast_data(settings)

    def register(model: DemandForecaster, tags: dict[str, str]) -> str:
        return tracking.register(model, settings.forecaster_name, tags, alias=CHALLENGER)

    tuning = forecaster_tuning_on(data, threads, register)
    tuning.tags = steps.run_tags(data.info, fingerprint) | tuning.tags
    return tuning


def forecaster_tuning_on(
    data: steps.ForecastData,
    threads: int,
    register: Callable[[DemandForecaster, dict[str, str]], str],
) -> Tuning:
    """Validation windows: the backtest origins before the holdout, scored on
    `data.before_holdout()` alone, so no trial reads a period, a feature stamp or a table row of
    the holdout; the best configuration is then scored on the holdout and refit on all the data
    for `register`."""
    tuned = data.before_holdout()
    validation, holdout = tuned.origins, data.holdout
    freq, country = data.info.freq, data.info.country

    def wrmsse(config: dict, on: steps.ForecastData, origin: pd.Timestamp, quantiles: bool):
        result = backtest(
            lambda: forecaster_from(freq, country, config, threads, quantiles=quantiles),
            on.panel,
            on.features,
            freq,
            [origin],
            on.tables.get("promotions"),
            on.tables.get("calendar"),
            stat_models=(),
            products=on.tables.get("products"),
            breadth=on.promotion_breadth,
        )
        return float(result.table.loc[FINAL, "wrmsse"])

    def refit(config: dict, tags: dict[str, str]) -> str:
        final = forecaster_from(freq, country, config, threads).fit(
            data.features,
            data.panel,
            data.tables.get("promotions"),
            data.tables.get("calendar"),
            data.tables.get("products"),
            breadth=data.promotion_breadth,
        )
        return register(final, tags)

    return Tuning(
        family="forecaster",
        space=forecaster_space,
        defaults=forecaster_defaults(),
        direction="minimize",
        score_name="validation_wrmsse",
        windows=len(validation),
        score=lambda config, step: wrmsse(config, tuned, validation[step], quantiles=False),
        holdout_metric=steps.HOLDOUT_METRIC,
        holdout_score=lambda config: wrmsse(config, data, holdout, quantiles=True),
        register=refit,
        tags={
            "validation_windows": ",".join(f"{o:%Y-%m-%d}" for o in validation),
            "holdout": f"{holdout:%Y-%m-%d}",
        },
    )


def recommender_tuning(
    settings: Settings,
    threads: int,
    fingerprint: str,
    progress: Callable[[str], None] | None = None,
) -> Tuning:
    """Validation windows: the time-split windows before the holdout, each scored by a ranker
    learned on the windows before it. Candidate rows are built once per window; a trial only
    refits the ranker. The holdout is `omnishelf train`'s, so champion and challenger meet
    the same test."""
    info = load_info(settings.tables_dir)
    tables = steps.resolved_tables(settings, ["transactions", "products"])[0]
    transactions, products = tables["transactions"], tables["products"]
    learn_from = TRAINING_HOLDOUTS[PROTOCOL]
    holdout = split(transactions, PROTOCOL)
    found = [holdout, *earlier_holdouts(holdout, VALIDATION_WINDOWS + learn_from)]
    # A validation window needs at least one earlier window to learn from.
    validation = min(VALIDATION_WINDOWS, len(found) - 2)
    if validation < 1 or len(holdout.customers) == 0:
        raise UserInputError(
            f"the history holds {len(found)} {PROTOCOL} windows of {TEST_DAYS} days; a "
            "recommender sweep needs 3 (a holdout, a validation window and one to learn from)"
        )
    lookup = steps.offline_lookup(settings)
    windows = []
    for number, window in enumerate(found, 1):
        if progress is not None:
            progress(f"candidate rows of window {number} of {len(found)}")
        windows.append(window_rows(window, products, lookup))

    def ranker_before(config: dict, first: int, reminders: bool = True):
        learned = windows[first : first + learn_from]
        return fit_ranker(learned, *ranker_from(config, threads), reminders=reminders)

    def score(config: dict, step: int) -> float:
        # Validation scores the ranker only: a reminder model here would be fitted and dropped.
        ranker, _ = ranker_before(config, step + 2, reminders=False)
        window = windows[step + 1]
        lists = ranked_lists(window, ranker.score(window.rows), 10)
        return recall_at_k(window.holdout.relevant, lists, 10)

    def holdout_score(config: dict) -> float:
        ranker, _ = ranker_before(config, 1, reminders=False)
        lists = ranked_lists(windows[0], ranker.score(windows[0].rows), 10)
        return recall_at_k(holdout.relevant, lists, 10)

    def register(config: dict, tags: dict[str, str]) -> str:
        # Served: the configuration learned again on the newest windows, the holdout's
        # included, up to the data's last day; its figures are the sweep run's.
        ranker, reminders = ranker_before(config, 0)
        served = NextBestProduct(ranker, reminders).fit(transactions, products)
        tags = tags | {
            "serving_rules": json.dumps(SERVING_RULES),
            "fit_until": f"{transactions[TS].max():%Y-%m-%d}",
            "metrics_of": mlflow.active_run().info.run_id,
        }
        return tracking.register(served, settings.recommender_name, tags, alias=CHALLENGER)

    return Tuning(
        family="recommender",
        space=recommender_space,
        defaults=recommender_defaults(),
        direction="maximize",
        score_name="validation_recall_at_10",
        windows=validation,
        score=score,
        holdout_metric=steps.RECOMMENDER_HOLDOUT_METRIC,
        holdout_score=holdout_score,
        register=register,
        tags=steps.run_tags(info, fingerprint)
        | {
            "protocol": PROTOCOL,
            "validation_windows": ",".join(w.holdout.window for w in windows[1 : validation + 1]),
            "holdout": holdout.window,
        },
    )


def sweep(
    settings: Settings,
    family: str,
    trials: int,
    timeout: float | None = None,
    study_name: str | None = None,
    seed: int = 0,
    threads: int = 2,
    progress: Callable[[str], None] | None = None,
) -> SweepResult:
    """TPE over the family's space with median pruning after each validation window; the best
    configuration is refit, scored on the holdout and registered as `challenger`."""
    began = time.perf_counter()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the progress line says it all
    _, fingerprint = resolution(settings)
    name = study_name or f"{family}-{fingerprint[:12]}"
    storage_url = settings.resolved_optuna_storage
    storage = open_storage(storage_url)
    _require_family(name, storage, family)
    if family == "forecaster":
        tuning = forecaster_tuning(settings, threads, fingerprint)
    elif family == "recommender":
        tuning = recommender_tuning(settings, threads, fingerprint, progress)
    else:
        raise ValueError(f"no sweep for {family!r}: forecaster or recommender")
    study = _open_study(name, storage, seed, tuning)
    before_me = sum(t.state.is_finished() for t in study.trials)
    mine: set[int] = set()  # trials this worker ran: the one that ran the best registers it

    def objective(trial: optuna.Trial) -> float:
        mine.add(trial.number)
        config = tuning.space(trial)
        with mlflow.start_run(run_name=f"{name}-trial-{trial.number}", nested=True):
            mlflow.set_tags({"study": name, "trial": str(trial.number), "model_family": family})
            mlflow.log_params(config)
            scores = []
            for step in range(tuning.windows):
                scores.append(tuning.score(config, step))
                mean = float(np.mean(scores))
                mlflow.log_metric(tuning.score_name, mean, step=step)
                trial.report(mean, step)
                if trial.should_prune():
                    mlflow.set_tag("state", "pruned")
                    raise optuna.TrialPruned()
            mlflow.set_tag("state", "complete")
            return mean

    def report(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if progress is None:
            return
        done = len(trial_table(study))
        elapsed = time.perf_counter() - began
        best = study.best_value if any(t.value is not None for t in study.trials) else math.nan
        eta = elapsed / max(done, 1) * max(trials - done, 0)
        progress(
            f"trial {trial.number} ({trial.state.name.lower()}), {done} in study, "
            f"best {best:.4f}, ETA {eta / 60:.1f} min"
        )

    with mlflow.start_run(run_name=f"sweep-{name}") as parent:
        mlflow.set_tags(
            tuning.tags
            | {
                "model_family": family,
                "kind": "sweep",
                "study": name,
                "optuna_storage": redact_uri(storage_url),
            }
        )
        study.optimize(objective, n_trials=trials, timeout=timeout, callbacks=[report])
        finished = [t for t in study.trials if t.value is not None]
        if not finished:
            raise LookupError(f"study {name}: no trial finished within the limits")
        best = study.best_trial
        defaults = [t for t in finished if t.user_attrs.get("default")]
        default_score = defaults[0].value if defaults else None
        table = trial_table(study)
        mlflow.log_table(table, "trials.json")
        mlflow.log_dict(best.params, "best_config.json")
        mlflow.log_metrics(
            {
                f"best_{tuning.score_name}": best.value,
                "trials": len(table),
                "pruned": int((table["state"] == "PRUNED").sum()),
            }
            | ({f"default_{tuning.score_name}": default_score} if default_score is not None else {})
        )
        holdout_score = tuning.holdout_score(best.params)
        mlflow.log_metric(tuning.holdout_metric, holdout_score)
        registered = None
        current = tracking.aliased_version(steps.registered_name(settings, family), CHALLENGER)
        already = (
            current is not None
            and current.tags.get("study") == name
            and current.tags.get("trial") == str(best.number)
        )
        # Workers sharing the study finish together: only the one that ran the best trial
        # registers it (or any, when an earlier session of the study finished it).
        if not already and (best.number in mine or best.number < before_me):
            registered = tuning.register(
                best.params,
                tuning.tags
                | steps.holdout_tags(tuning.tags["holdout"], tuning.holdout_metric, holdout_score)
                | {"study": name, "trial": str(best.number), "model_family": family},
            )
    return SweepResult(
        study,
        tuning.score_name,
        default_score,
        float(best.value),
        best.params,
        tuning.holdout_metric,
        holdout_score,
        registered,
        time.perf_counter() - began,
        parent.info.run_id,
    )


# ---- review -----------------------------------------------------------------------------------


def compare_runs(run_a: str, run_b: str) -> pd.DataFrame:
    """Metrics of two runs side by side with B - A, then the parameters that differ."""
    client = MlflowClient()
    try:
        a, b = client.get_run(run_a), client.get_run(run_b)
    except mlflow.exceptions.MlflowException as error:
        raise LookupError(f"unknown run: {error.message}") from None
    names = sorted(set(a.data.metrics) | set(b.data.metrics))
    metrics = pd.DataFrame(
        {
            "name": names,
            "A": [a.data.metrics.get(n, np.nan) for n in names],
            "B": [b.data.metrics.get(n, np.nan) for n in names],
        }
    )
    metrics["B - A"] = metrics["B"] - metrics["A"]
    differing = sorted(
        n
        for n in set(a.data.params) | set(b.data.params)
        if a.data.params.get(n) != b.data.params.get(n)
    )
    params = pd.DataFrame(
        {
            "name": [f"param {n}" for n in differing],
            "A": [a.data.params.get(n, "") for n in differing],
            "B": [b.data.params.get(n, "") for n in differing],
            "B - A": "",
        }
    )
    return pd.concat([metrics, params], ignore_index=True)


@dataclass
class Promotion:
    promoted: bool
    version: str
    message: str


def promote(registered_name: str, reason: str, force: bool = False) -> Promotion:
    """Move `champion` to the challenger if it beats the champion on the same holdout (same data
    fingerprint, same holdout window, same metric); `force` overrides the gate. Who, when, why
    and the gate's verdict are recorded as tags of the promoted version."""
    challenger = tracking.aliased_version(registered_name, CHALLENGER)
    if challenger is None:
        raise LookupError(f"model '{registered_name}' has no '{CHALLENGER}' version: run a sweep")
    champion = tracking.champion_version(registered_name)
    family = challenger.tags.get("model_family", "")
    if family not in GATES:
        raise LookupError(f"version {challenger.version} has no known model_family tag")
    metric, better = GATES[family]
    verdict = _gate(challenger, champion, metric, better)
    if verdict.startswith("refused") and not force:
        return Promotion(False, challenger.version, verdict)
    client = MlflowClient()
    client.set_registered_model_alias(registered_name, tracking.CHAMPION, challenger.version)
    for key, value in {
        "promoted_by": getpass.getuser(),
        "promoted_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "promotion_reason": reason,
        "promotion_gate": verdict if not force else f"overridden ({verdict})",
        "replaced_version": str(champion.version) if champion else "",
    }.items():
        client.set_model_version_tag(registered_name, challenger.version, key, value)
    return Promotion(True, challenger.version, verdict)


def _gate(challenger, champion, metric: str, better: str) -> str:
    if champion is None:
        return "passed: no champion yet"
    if champion.version == challenger.version:
        return "refused: the challenger already is the champion"
    same = ("dataset_fingerprint", "holdout", "holdout_metric")
    differing = [k for k in same if challenger.tags.get(k) != champion.tags.get(k)]
    if differing:
        return f"refused: not the same holdout ({', '.join(differing)} differ)"
    ours, theirs = float(challenger.tags[metric]), float(champion.tags[metric])
    wins = ours < theirs if better == "min" else ours > theirs
    relation = "beats" if wins else "does not beat"
    prefix = "passed" if wins else "refused"
    return (
        f"{prefix}: challenger v{challenger.version} {metric}={ours:.4f} {relation} champion "
        f"v{champion.version} {metric}={theirs:.4f}"
    )
