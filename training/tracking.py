"""MLflow: where runs are logged, how models are packaged, registered and found by alias."""

from __future__ import annotations

import logging
from importlib.metadata import version
from pathlib import Path

import mlflow
import mlflow.pyfunc
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

log = logging.getLogger(__name__)

CHAMPION = "champion"
# Declared rather than inferred: inference starts a subprocess and costs ~4 s per model.
SERVING_REQUIREMENTS = [
    f"{package}=={version(package)}"
    for package in ("implicit", "lightgbm", "numpy", "pandas", "scikit-learn", "holidays", "scipy")
]


class PackagedModel(mlflow.pyfunc.PythonModel):
    """Wraps a fitted omnishelf model so MLflow can store, register and serve it."""

    def __init__(self, model):
        self.model = model

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        return self.model.predict_frame(model_input)


def configure(tracking_uri: str, experiment: str, artifact_root: Path) -> str:
    """Point MLflow at the store and make sure the experiment keeps its artifacts under mlruns/."""
    mlflow.set_tracking_uri(tracking_uri)
    found = mlflow.get_experiment_by_name(experiment)
    if found is None:
        artifact_root.mkdir(parents=True, exist_ok=True)
        experiment_id = mlflow.create_experiment(
            experiment, artifact_location=artifact_root.as_uri()
        )
    else:
        experiment_id = found.experiment_id
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


def register(model, registered_name: str, tags: dict[str, str], alias: str = CHAMPION) -> str:
    """Log `model` in the active run, register it and move `alias` (champion by default; a
    sweep's best is registered as challenger until someone promotes it) to it."""
    info = mlflow.pyfunc.log_model(
        name="model",
        python_model=PackagedModel(model),
        pip_requirements=SERVING_REQUIREMENTS,
        registered_model_name=registered_name,
    )
    client = MlflowClient()
    registered_version = str(info.registered_model_version)
    for key, value in tags.items():
        client.set_model_version_tag(registered_name, registered_version, key, value)
    client.set_registered_model_alias(registered_name, alias, registered_version)
    return registered_version


def aliased_version(registered_name: str, alias: str):
    """The model version holding `alias`, or None."""
    try:
        return MlflowClient().get_model_version_by_alias(registered_name, alias)
    except MlflowException:
        return None


def champion_version(registered_name: str):
    """The model version holding the champion alias, or None."""
    return aliased_version(registered_name, CHAMPION)


def load_champion(registered_name: str):
    """The fitted omnishelf model behind the champion alias, and its version. LookupError when
    there is none, or when the model says it cannot be used (`unservable_reason`)."""
    found = champion_version(registered_name)
    if found is None:
        raise LookupError(
            f"no '{CHAMPION}' version of model '{registered_name}' in the registry at "
            f"{mlflow.get_tracking_uri()}: run `omnishelf train` first"
        )
    packaged = mlflow.pyfunc.load_model(f"models:/{registered_name}@{CHAMPION}")
    model = packaged.unwrap_python_model().model
    # A pickle can outlive the code that wrote it: the model says why it cannot be used, once,
    # for every caller; served or used in a batch, it would fail later, on every request.
    if reason := model.unservable_reason():
        raise LookupError(
            f"the champion of {registered_name} (version {found.version}) cannot be used: "
            f"{reason}; retrain it with `omnishelf train --force`"
        )
    return model, found.version
