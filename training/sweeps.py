"""Search spaces of the sweeps: pure functions of an Optuna trial, so a reviewer reads the whole
space in one place and a test can draw from it without training anything."""

from __future__ import annotations

from typing import Any

import optuna

from training.forecaster import DemandForecaster
from training.ranker import NUM_BOOST_ROUND, RANKER_PARAMS

TUNED_PARAMS = (
    "learning_rate",
    "num_leaves",
    "min_data_in_leaf",
    "feature_fraction",
    "bagging_fraction",
    "lambda_l2",
    "tweedie_variance_power",
)


def forecaster_space(trial: optuna.Trial) -> dict[str, Any]:
    """LightGBM settings of the demand forecaster; `num_boost_round` is a constructor argument,
    the rest go to `params`."""
    return {
        "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.15, log=True),
        "num_leaves": trial.suggest_int("num_leaves", 7, 63, log=True),
        "min_data_in_leaf": trial.suggest_int("min_data_in_leaf", 20, 500, log=True),
        "feature_fraction": trial.suggest_float("feature_fraction", 0.5, 1.0),
        "bagging_fraction": trial.suggest_float("bagging_fraction", 0.5, 1.0),
        "lambda_l2": trial.suggest_float("lambda_l2", 1e-3, 30.0, log=True),
        "tweedie_variance_power": trial.suggest_float("tweedie_variance_power", 1.05, 1.6),
        "num_boost_round": trial.suggest_int("num_boost_round", 100, 600, step=50),
    }


def forecaster_defaults() -> dict[str, Any]:
    """The untuned configuration in the same terms, enqueued as a study's first trial so the
    sweep reports what tuning gained."""
    model = DemandForecaster("W")
    return {name: model.params[name] for name in TUNED_PARAMS} | {
        "num_boost_round": model.num_boost_round
    }


def forecaster_from(
    freq: str, country: str, config: dict[str, Any], threads: int = 2, quantiles: bool = True
):
    """A forecaster with a configuration drawn from `forecaster_space`."""
    params = {k: v for k, v in config.items() if k != "num_boost_round"} | {"num_threads": threads}
    return DemandForecaster(
        freq,
        country,
        params=params,
        num_boost_round=config.get("num_boost_round", 300),
        quantiles=quantiles,
    )


RANKER_TUNED_PARAMS = (
    "learning_rate",
    "num_leaves",
    "min_child_samples",
    "colsample_bytree",
    "subsample",
    "lambdarank_truncation_level",
)


def recommender_space(trial: optuna.Trial) -> dict[str, Any]:
    """LightGBM lambdarank settings of the recommender's ranker; the candidate generators are
    not tuned (they are fitted once per window, so trials only refit the ranker)."""
    return {
        "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.2, log=True),
        "num_leaves": trial.suggest_int("num_leaves", 3, 63, log=True),
        "min_child_samples": trial.suggest_int("min_child_samples", 50, 3000, log=True),
        "colsample_bytree": trial.suggest_float("colsample_bytree", 0.4, 1.0),
        "subsample": trial.suggest_float("subsample", 0.5, 1.0),
        "lambdarank_truncation_level": trial.suggest_int("lambdarank_truncation_level", 10, 60),
        "num_boost_round": trial.suggest_int("num_boost_round", 100, 1000, step=50),
    }


def recommender_defaults() -> dict[str, Any]:
    """The ranker's untuned configuration in the terms of `recommender_space`."""
    return {name: RANKER_PARAMS[name] for name in RANKER_TUNED_PARAMS} | {
        "num_boost_round": NUM_BOOST_ROUND
    }


def ranker_from(config: dict[str, Any], threads: int = 2) -> tuple[dict[str, Any], int]:
    """Ranker params and boosting rounds of a configuration drawn from `recommender_space`."""
    params = {k: v for k, v in config.items() if k != "num_boost_round"} | {"num_threads": threads}
    return params, config.get("num_boost_round", NUM_BOOST_ROUND)
