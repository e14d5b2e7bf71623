import optuna

from training.forecaster import DemandForecaster
from training.ranker import Ranker
from training.sweeps import (
    forecaster_defaults,
    forecaster_from,
    forecaster_space,
    ranker_from,
    recommender_defaults,
    recommender_space,
)


def test_space_is_a_pure_function_of_the_trial_and_holds_the_defaults():
    defaults = forecaster_defaults()
    # The untuned configuration is a point of the space: a FixedTrial accepts it as is.
    assert forecaster_space(optuna.trial.FixedTrial(defaults)) == defaults
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    drawn = [forecaster_space(study.ask()) for _ in range(50)]
    assert all(0.01 <= d["learning_rate"] <= 0.15 for d in drawn)
    assert all(7 <= d["num_leaves"] <= 63 and d["num_boost_round"] % 50 == 0 for d in drawn)
    assert len({tuple(sorted(d.items())) for d in drawn}) == 50


def test_a_drawn_configuration_becomes_a_forecaster():
    config = forecaster_defaults() | {"num_leaves": 31, "num_boost_round": 150}
    model = forecaster_from("W", "US", config, threads=1, quantiles=False)
    assert isinstance(model, DemandForecaster)
    assert model.params["num_leaves"] == 31 and model.params["num_threads"] == 1
    assert model.num_boost_round == 150 and model.quantiles is False


def test_recommender_space_holds_the_ranker_defaults_and_draws_within_bounds():
    defaults = recommender_defaults()
    assert recommender_space(optuna.trial.FixedTrial(defaults)) == defaults
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    drawn = [recommender_space(study.ask()) for _ in range(50)]
    assert all(3 <= d["num_leaves"] <= 63 and 50 <= d["min_child_samples"] <= 3000 for d in drawn)
    assert len({tuple(sorted(d.items())) for d in drawn}) == 50
    params, rounds = ranker_from(defaults | {"num_boost_round": 250}, threads=1)
    ranker = Ranker(params, rounds)
    assert ranker.params["objective"] == "lambdarank" and ranker.params["num_threads"] == 1
    assert ranker.num_boost_round == 250 and ranker.params["num_leaves"] == defaults["num_leaves"]
