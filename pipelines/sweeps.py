"""Optuna sweeps, run comparison and promotion: experiments a team can launch, review and ship.

A sweep tunes on validation windows (the backtest windows before the last one) and keeps the last
window as the holdout on which champion and challenger are compared. Every trial is a nested
MLflow run under one parent; the study lives in Optuna's RDB storage, so the same command started
on several processes or machines adds trials to one study.
"""

from __future__ import annotations

import getpass
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
from mlflow import MlflowClient

from features.identity import resolution
from features.settings import Settings
from pipelines import steps
from training import tracking
from training.backtest import FINAL, backtest
from training.sweeps import forecaster_defaults, forecaster_from, forecaster_space

CHALLENGER = "challenger"
# Which metric decides a promotion, and which way is better, by model family.
GATES = {
    "forecaster": (steps.HOLDOUT_METRIC, "min"),
    "recommender": ("omnishelf_recall_at_10", "max"),
}
PRUNER_STARTUP_TRIALS = 5


@dataclass
class SweepResult:
    study: optuna.Study
    default_score: float | None  # the untuned configuration's validation score, if it ran
    best_score: float
    best_params: dict
    holdout_score: float  # the best configuration refit before the holdout, scored on it
    registered: str | None  # the challenger version, None when another worker registered it
    seconds: float
    parent_run_id: str


def _open_study(name: str, storage: str, seed: int) -> optuna.Study:
    """Create the study, or join it if another worker did. Creating is atomic in the storage
    (the name is unique), so exactly one worker enqueues the default configuration and draws
    from `seed`; the others draw from seeds of their own, or they would propose the same
    startup trials."""
    pruner = optuna.pruners.MedianPruner(n_startup_trials=PRUNER_STARTUP_TRIALS)
    try:
        study = optuna.create_study(
            study_name=name,
            storage=storage,
            direction="minimize",
            sampler=optuna.samplers.TPESampler(seed=seed),
            pruner=pruner,
        )
    except optuna.exceptions.DuplicatedStudyError:
        worker = hash((socket.gethostname(), os.getpid())) % 100_000
        return optuna.load_study(
            study_name=name,
            storage=storage,
            sampler=optuna.samplers.TPESampler(seed=seed + 1 + worker),
            pruner=pruner,
        )
    study.enqueue_trial(forecaster_defaults(), user_attrs={"default": True})
    return study


def trial_table(study: optuna.Study) -> pd.DataFrame:
    rows = [
        {"trial": t.number, "state": t.state.name, "score": t.value, **t.params}
        for t in study.trials
        if t.state != optuna.trial.TrialState.RUNNING
    ]
    return pd.DataFrame(rows)


def sweep_forecaster(
    settings: Settings,
    trials: int,
    timeout: float | None = None,
    study_name: str | None = None,
    seed: int = 0,
    threads: int = 2,
    progress: Callable[[str], None] | None = None,
) -> SweepResult:
    """TPE over `forecaster_space` with median pruning after each validation window; the best
    configuration is refit, scored on the holdout and registered as `challenger`."""
    began = time.perf_counter()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the progress line says it all
    data = steps.forecast_data(settings)
    _, fingerprint = resolution(settings)
    validation, holdout = data.origins[:-1], data.origins[-1]
    promotions, calendar = data.tables.get("promotions"), data.tables.get("calendar")
    freq, country = data.info.freq, data.info.country
    name = study_name or f"forecaster-{fingerprint[:12]}"
    storage = settings.resolved_optuna_storage
    study = _open_study(name, storage, seed)
    before_me = sum(t.state.is_finished() for t in study.trials)
    mine: set[int] = set()  # trials this worker ran: the one that ran the best registers it

    def validation_score(config: dict, trial: optuna.Trial | None = None) -> float:
        scores = []
        for step, origin in enumerate(validation):
            result = backtest(
                lambda: forecaster_from(freq, country, config, threads, quantiles=False),
                data.panel,
                data.features,
                freq,
                [origin],
                promotions,
                calendar,
                stat_models=(),
            )
            scores.append(float(result.table.loc[FINAL, "wrmsse"]))
            mlflow.log_metric("validation_wrmsse", float(np.mean(scores)), step=step)
            if trial is not None:
                trial.report(float(np.mean(scores)), step)
                if trial.should_prune():
                    raise optuna.TrialPruned()
        return float(np.mean(scores))

    def objective(trial: optuna.Trial) -> float:
        mine.add(trial.number)
        config = forecaster_space(trial)
        with mlflow.start_run(run_name=f"{name}-trial-{trial.number}", nested=True):
            mlflow.set_tags(
                {"study": name, "trial": str(trial.number), "model_family": "forecaster"}
            )
            mlflow.log_params(config)
            try:
                score = validation_score(config, trial)
            except optuna.TrialPruned:
                mlflow.set_tag("state", "pruned")
                raise
            mlflow.set_tag("state", "complete")
            return score

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
            {
                **steps.run_tags(data.info, fingerprint),
                "model_family": "forecaster",
                "kind": "sweep",
                "study": name,
                "optuna_storage": storage.split("@")[-1],
                "validation_origins": ",".join(f"{o:%Y-%m-%d}" for o in validation),
                "holdout": f"{holdout:%Y-%m-%d}",
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
        mlflow.log_params({f"best_{k}": v for k, v in best.params.items()})
        mlflow.log_metrics(
            {
                "best_validation_wrmsse": best.value,
                "trials": len(table),
                "pruned": int((table["state"] == "PRUNED").sum()),
            }
            | ({"default_validation_wrmsse": default_score} if default_score is not None else {})
        )
        holdout_result = backtest(
            lambda: forecaster_from(freq, country, best.params, threads),
            data.panel,
            data.features,
            freq,
            [holdout],
            promotions,
            calendar,
            stat_models=(),
        )
        holdout_score = float(holdout_result.table.loc[FINAL, "wrmsse"])
        mlflow.log_metric(steps.HOLDOUT_METRIC, holdout_score)
        registered = None
        current = tracking.aliased_version(settings.forecaster_name, CHALLENGER)
        already = (
            current is not None
            and current.tags.get("study") == name
            and current.tags.get("trial") == str(best.number)
        )
        # Workers sharing the study finish together: only the one that ran the best trial
        # registers it (or any, when an earlier session of the study finished it).
        if not already and (best.number in mine or best.number < before_me):
            final = forecaster_from(freq, country, best.params, threads).fit(
                data.features, data.panel, promotions, calendar
            )
            registered = tracking.register(
                final,
                settings.forecaster_name,
                steps.run_tags(data.info, fingerprint)
                | steps.holdout_tags(data, steps.HOLDOUT_METRIC, holdout_score)
                | {"study": name, "trial": str(best.number), "model_family": "forecaster"},
                alias=CHALLENGER,
            )
    return SweepResult(
        study,
        default_score,
        float(best.value),
        best.params,
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
