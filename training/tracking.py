"""MLflow: where runs are logged, how models are packaged, registered and found by alias, and
the hash that lets a model be unpickled only if its artifacts are the ones registered."""

from __future__ import annotations

import getpass
import hashlib
import logging
import tempfile
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

import mlflow
import mlflow.pyfunc
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from features.redaction import redact_uri

log = logging.getLogger(__name__)

CHAMPION = "champion"
# The SHA-256 of a version's artifact files, recorded when it is registered (or signed).
HASH_TAG = "artifacts_sha256"
# Written by MLflow into the folder a `models:/` URI is downloaded to, not a stored artifact.
DOWNLOAD_NOTE = "registered_model_meta"
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
    # Hashed before the alias moves, so no reader finds the alias on an unsigned version.
    with tempfile.TemporaryDirectory() as folder:
        digest = artifacts_sha256(_download(registered_name, registered_version, folder))
    recorded = {HASH_TAG: digest, "model_class": type(model).__name__}
    for key, value in (tags | recorded).items():
        client.set_model_version_tag(registered_name, registered_version, key, value)
    client.set_registered_model_alias(registered_name, alias, registered_version)
    return registered_version


def artifacts_sha256(folder: Path) -> str:
    """One SHA-256 over every file under `folder` (but MLflow's download note): each file's
    path (relative, so the same artifacts hash the same wherever they are downloaded) and
    content hash, in sorted order."""
    digest = hashlib.sha256()
    files = (p for p in folder.rglob("*") if p.is_file() and p != folder / DOWNLOAD_NOTE)
    for path in sorted(files):
        with path.open("rb") as content:
            file_hash = hashlib.file_digest(content, "sha256").hexdigest()
        digest.update(f"{path.relative_to(folder).as_posix()}\0{file_hash}\n".encode())
    return digest.hexdigest()


def _download(registered_name: str, model_version: str, folder: str) -> Path:
    """A version's artifact files, copied into `folder` (what is hashed is what is loaded)."""
    return Path(
        mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{registered_name}/{model_version}", dst_path=folder
        )
    )


def verify_artifacts(found, folder: Path) -> None:
    """LookupError unless the artifacts in `folder` hash to what was recorded for `found` (a
    model version) when it was registered: a pickle is code, and is run only if unchanged."""
    label = f"model {found.name} version {found.version}"
    recorded = found.tags.get(HASH_TAG)
    if not recorded:
        raise LookupError(
            f"{label}: artifacts carry no hash (tag {HASH_TAG}); if you trust this version, "
            f"sign it with `omnishelf models sign {found.name}`"
        )
    if artifacts_sha256(folder) != recorded:
        raise LookupError(f"{label}: artifacts do not match the hash recorded at registration")


def sign_champion(registered_name: str) -> tuple[str, str]:
    """Record the hash of the champion's artifacts as they are now (a version registered before
    hashes were, after its owner checked it): its version and the hash."""
    found = champion_version(registered_name)
    if found is None:
        raise LookupError(f"no '{CHAMPION}' version of model '{registered_name}' to sign")
    with tempfile.TemporaryDirectory() as folder:
        digest = artifacts_sha256(_download(registered_name, found.version, folder))
    client = MlflowClient()
    for key, value in {
        HASH_TAG: digest,
        "signed_by": getpass.getuser(),
        "signed_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }.items():
        client.set_model_version_tag(registered_name, found.version, key, value)
    return str(found.version), digest


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
    there is none, when its artifacts do not match the hash recorded at registration (checked
    before anything is unpickled), or when the model says it cannot be used
    (`unservable_reason`)."""
    found = champion_version(registered_name)
    if found is None:
        raise LookupError(
            f"no '{CHAMPION}' version of model '{registered_name}' in the registry at "
            f"{redact_uri(mlflow.get_tracking_uri())}: run `omnishelf train` first"
        )
    with tempfile.TemporaryDirectory() as folder:
        local = _download(registered_name, found.version, folder)
        verify_artifacts(found, local)
        packaged = mlflow.pyfunc.load_model(str(local))
    model = packaged.unwrap_python_model().model
    # A pickle can outlive the code that wrote it: the model says why it cannot be used, once,
    # for every caller; served or used in a batch, it would fail later, on every request.
    if reason := model.unservable_reason():
        raise LookupError(
            f"the champion of {registered_name} (version {found.version}) cannot be used: "
            f"{reason}; retrain it with `omnishelf train --force`"
        )
    return model, found.version
