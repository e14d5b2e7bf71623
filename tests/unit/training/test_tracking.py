"""The artifacts hash: recorded at registration, checked before a champion is unpickled, and
re-recorded by signing. A real MLflow store (SQLite) in a temporary folder."""

from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from training import tracking

NAME = "hash-test"


class Constant:
    """The least a registered omnishelf model offers."""

    def predict_frame(self, frame):
        return frame

    def unservable_reason(self):
        return None


@pytest.fixture
def registered(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # mlflow writes nothing outside the test's folder
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracking.configure(uri, "hashes", tmp_path / "artifacts")
    with mlflow.start_run():
        version = tracking.register(Constant(), NAME, {"model_family": "test"})
    yield version
    mlflow.set_tracking_uri(None)


def artifact_folder(version: str) -> Path:
    uri = MlflowClient().get_model_version_download_uri(NAME, version)
    return Path(uri.removeprefix("file://"))


def test_registration_records_the_hash_of_the_artifacts_and_the_champion_loads(registered):
    found = tracking.champion_version(NAME)
    assert found.tags[tracking.HASH_TAG] == tracking.artifacts_sha256(artifact_folder(registered))
    model, version = tracking.load_champion(NAME)
    assert isinstance(model, Constant) and str(version) == registered


def test_a_changed_artifact_is_not_unpickled(registered, monkeypatch):
    [pickled] = artifact_folder(registered).rglob("python_model.pkl")
    pickled.write_bytes(pickled.read_bytes() + b"\0")  # still a loadable pickle
    unpickled = []
    monkeypatch.setattr(mlflow.pyfunc, "load_model", lambda *a, **k: unpickled.append(a))
    with pytest.raises(LookupError) as refused:
        tracking.load_champion(NAME)
    assert str(refused.value) == (
        f"model {NAME} version {registered}: artifacts do not match the hash recorded at "
        "registration"
    )
    assert unpickled == []


def test_an_unsigned_version_is_refused_until_signed(registered):
    MlflowClient().delete_model_version_tag(NAME, registered, tracking.HASH_TAG)
    with pytest.raises(LookupError, match=f"version {registered}: artifacts carry no hash"):
        tracking.load_champion(NAME)
    signed, digest = tracking.sign_champion(NAME)
    assert signed == registered
    assert tracking.champion_version(NAME).tags[tracking.HASH_TAG] == digest
    assert isinstance(tracking.load_champion(NAME)[0], Constant)


def test_the_hash_covers_names_and_contents_in_a_fixed_order(tmp_path):
    folder = tmp_path / "a"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "x.bin").write_bytes(b"1")
    (folder / "MLmodel").write_text("flavor")
    first = tracking.artifacts_sha256(folder)
    assert first == tracking.artifacts_sha256(folder)
    (folder / "sub" / "x.bin").rename(folder / "sub" / "y.bin")
    assert tracking.artifacts_sha256(folder) != first  # a renamed file changes it
