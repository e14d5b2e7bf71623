"""The demo names the model the registry holds: registered for real in a temporary MLflow store
(SQLite), then titled from the registry's record of it."""

import mlflow
import pytest

from pipelines.models import champion_title
from training import tracking

NAME = "omnishelf-recommender"


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tracking.configure(f"sqlite:///{tmp_path / 'mlflow.db'}", "titles", tmp_path / "artifacts")
    yield
    mlflow.set_tracking_uri(None)


def test_the_title_names_the_registered_ranker_and_its_holdout_score(store, served):
    tags = {"model_family": "recommender", "holdout_metric": "recall_at_10", "recall_at_10": "0.21"}
    with mlflow.start_run():
        version = tracking.register(served, NAME, tags)
    title = champion_title(tracking.champion_version(NAME))
    assert title == (
        f"{NAME} v{version}: LightGBM ranker over candidate generators, recall_at_10 0.2100 on "
        "the holdout"
    )
    assert "ALS" not in title and "popularity" not in title


def test_a_version_registered_without_a_class_is_named_by_its_family(store):
    class Model:
        def predict_frame(self, frame):
            return frame

    with mlflow.start_run():
        version = tracking.register(Model(), NAME, {"model_family": "recommender"})
    mlflow.MlflowClient().delete_model_version_tag(NAME, version, "model_class")
    assert champion_title(tracking.champion_version(NAME)) == f"{NAME} v{version}: recommender"
