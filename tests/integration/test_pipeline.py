"""The pipeline on small synthetic data: figures on a time holdout, registry, idempotent reruns."""

import mlflow
import pytest

from features.dataset import load_info
from pipelines import steps
from training import tracking

pytestmark = pytest.mark.integration


def test_each_step_built_something(workspace):
    results = workspace["results"]
    assert results["data"].status == "built"
    assert results["features"].figures["rows materialised"] > 0
    assert results["recommender"].status.startswith("built v")
    assert results["forecaster"].status.startswith("built v")


def test_models_beat_their_baselines_on_the_holdout(workspace):
    recommender = workspace["results"]["recommender"].figures
    forecaster = workspace["results"]["forecaster"].figures
    assert recommender["als_recall_at_10"] > recommender["popularity_recall_at_10"]
    assert 0 < forecaster["forecast_wape"] < forecaster["snaive_wape"]


def test_champions_are_registered_with_their_data_and_logged_figures(workspace):
    settings = workspace["settings"]
    for name, artifact in (
        (settings.recommender_name, "recall_at_k.png"),
        (settings.forecaster_name, "forecast_vs_actual.png"),
    ):
        version = tracking.champion_version(name)
        assert version is not None
        assert version.tags["dataset"] == "synthetic-small"
        # The data's fingerprint, then that of the decisions on customers (merges, forgets).
        assert version.tags["dataset_fingerprint"].startswith(
            load_info(settings.tables_dir).fingerprint
        )
        run = mlflow.get_run(version.run_id)
        assert "data_window" in run.data.tags
        artifacts = [a.path for a in mlflow.MlflowClient().list_artifacts(version.run_id)]
        assert artifact in artifacts
        assert str(settings.mlruns_dir) in run.info.artifact_uri


def test_reruns_reuse_what_is_built(workspace):
    settings = workspace["settings"]
    before = tracking.champion_version(settings.recommender_name).version
    assert steps.train_recommender(settings).status == "reused"
    assert steps.train_forecaster(settings).status == "reused"
    result, summaries = steps.build_features(settings)
    assert all(s.rows == 0 for s in summaries), "a rerun must not materialise again"
    assert tracking.champion_version(settings.recommender_name).version == before
