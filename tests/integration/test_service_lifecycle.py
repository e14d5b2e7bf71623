"""A server started with API keys and a short reload interval: a key is required where it
should be, oversized bodies are refused, a moved champion alias is served without downtime, a
champion whose artifacts are not the registered ones is not loaded, and a newly materialised
day moves the answers without retraining. Off loopback without a key, the server does not
start."""

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import mlflow
import pytest
from mlflow import MlflowClient

from features.contract import CUSTOMER_ID, TS
from features.settings import Settings
from pipelines import steps
from pipelines.steps import restock_orders
from serving.service import load_champion
from tests.integration.conftest import free_port, run_cli, running_service, wait_until_ready
from tests.integration.test_feature_store import _until
from training import tracking

pytestmark = pytest.mark.integration

KEY = "test-key-0123456789"
OLD_KEY = "retiring-key-0123456789"


@pytest.fixture(scope="module")
def guarded(workspace):
    home = workspace["settings"].home
    keys = f"{OLD_KEY},{KEY}"  # during a rotation, both are accepted
    with running_service(home, OMNISHELF_API_KEYS=keys, OMNISHELF_RELOAD_SECONDS="1") as client:
        wait_until_ready(client)
        yield client


def known_customer(workspace) -> int:
    return int(workspace["tables"]["transactions"]["customer_id"].iloc[0])


def test_a_key_is_required_on_the_api_docs_and_metrics_but_not_on_probes(workspace, guarded):
    body = {"customer_id": known_customer(workspace), "k": 3}
    missing = guarded.post("/recommend", json=body)
    assert missing.status_code == 401
    assert missing.json() == {"error": "missing or wrong X-API-Key header", "field": "X-API-Key"}
    wrong = guarded.post("/recommend", json=body, headers={"X-API-Key": KEY + "x"})
    assert wrong.status_code == 401
    for key in (KEY, OLD_KEY):
        right = guarded.post("/recommend", json=body, headers={"X-API-Key": key})
        assert right.status_code == 200, right.text
    for probe in ("/healthz", "/livez", "/readyz"):
        assert guarded.get(probe).status_code == 200, probe
    for page in ("/metrics", "/docs.json"):
        assert guarded.get(page).status_code == 401, page
        assert guarded.get(page, headers={"X-API-Key": KEY}).status_code == 200, page


def test_off_loopback_without_a_key_the_server_refuses_to_start(workspace, monkeypatch):
    settings = workspace["settings"]
    env = {
        key: value for key, value in os.environ.items() if not key.startswith("OMNISHELF_API_KEY")
    }
    env |= {
        "OMNISHELF_HOME": str(settings.home),
        "OMNISHELF_HOST": "0.0.0.0",
        "BENTOML_HOME": str(settings.data_dir / "bentoml"),
        "BENTOML_DO_NOT_TRACK": "true",
    }
    # `bentoml serve` itself, as a deployment starts it: one line, no traceback.
    command = ["-m", "bentoml", "serve", "serving.service:Omnishelf", "--port", str(free_port())]
    served = subprocess.run(
        [sys.executable, *command], env=env, capture_output=True, text=True, timeout=300
    )
    refusal = "error: refusing to serve on 0.0.0.0 without an API key: set OMNISHELF_API_KEYS"
    assert served.returncode != 0
    assert refusal in served.stderr
    assert "Traceback" not in served.stderr + served.stdout
    # `omnishelf serve` says it before starting anything, as a user error.
    monkeypatch.setenv("OMNISHELF_HOST", "0.0.0.0")
    for name in ("OMNISHELF_API_KEYS", "OMNISHELF_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    refused = run_cli(settings, "serve", "--port", str(free_port()))
    assert refused.returncode == 2
    assert refusal in " ".join(refused.stdout.split())


def test_oversized_bodies_are_refused_before_parsing(guarded):
    big = b'{"customer_id": 1, "pad": "' + b"x" * (5 * 2**20) + b'"}'
    answer = guarded.post(
        "/recommend",
        content=big,
        headers={"X-API-Key": KEY, "Content-Type": "application/json"},
    )
    assert answer.status_code == 413 and answer.json()["field"] == "body"
    # Without Content-Length (chunked), the size is counted as the body arrives.
    chunked = guarded.post(
        "/recommend",
        content=(big[i : i + 2**16] for i in range(0, len(big), 2**16)),
        headers={"X-API-Key": KEY, "Content-Type": "application/json"},
    )
    assert chunked.status_code == 413 and chunked.json()["field"] == "body"
    small = b'{"customer_id": 1, "k": 3}'
    answer = guarded.post(
        "/recommend",
        content=(small[i : i + 5] for i in range(0, len(small), 5)),
        headers={"X-API-Key": KEY, "Content-Type": "application/json"},
    )
    assert answer.status_code == 200 and len(answer.json()["items"]) == 3, answer.text


def test_a_moved_champion_alias_is_served_without_downtime(workspace, guarded):
    name = workspace["settings"].recommender_name
    current = tracking.champion_version(name)
    model, _ = tracking.load_champion(name)
    with mlflow.start_run(run_name="reload-test"):
        new = tracking.register(model, name, dict(current.tags))
    assert new != str(current.version)
    body = {"customer_id": known_customer(workspace), "k": 3}
    served, statuses = None, []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        answer = guarded.post("/recommend", json=body, headers={"X-API-Key": KEY})
        statuses.append(answer.status_code)
        served = answer.json().get("model_version")
        if served == f"{name}/{new}":
            break
        time.sleep(0.1)
    assert served == f"{name}/{new}"
    assert set(statuses) == {200}  # every request during the swap was answered
    # Back to the version the other tests expect.
    MlflowClient().set_registered_model_alias(name, tracking.CHAMPION, current.version)


def test_a_corrupt_champion_artifact_is_named_not_served(workspace):
    name = workspace["settings"].forecaster_name
    current = tracking.champion_version(name)
    model, _ = tracking.load_champion(name)
    with mlflow.start_run(run_name="corrupt-test"):
        broken = tracking.register(model, name, dict(current.tags))
    client = MlflowClient()
    # The embedded store keeps artifacts on local disk: break the pickled model in place.
    folder = Path(client.get_model_version_download_uri(name, broken).removeprefix("file://"))
    pickles = list(folder.rglob("*.pkl"))
    assert pickles
    try:
        for path in pickles:
            path.write_bytes(b"not a pickle")
        champion = load_champion(name)
        assert champion.model is None
        assert champion.problem == (
            f"model {name} version {broken}: artifacts do not match the hash recorded at "
            "registration"
        )
    finally:
        client.set_registered_model_alias(name, tracking.CHAMPION, current.version)


def test_an_unsigned_champion_is_not_loaded(workspace, record_property):
    settings = workspace["settings"]
    name = settings.forecaster_name
    current = tracking.champion_version(name)
    model, _ = tracking.load_champion(name)
    with mlflow.start_run(run_name="unsigned-test"):
        unsigned = tracking.register(model, name, dict(current.tags))
    client = MlflowClient()
    client.delete_model_version_tag(name, unsigned, tracking.HASH_TAG)
    try:
        with running_service(settings.home) as server:
            ready = server.get("/readyz")
            answer = server.post("/forecast", json={"store_id": 1, "product_ids": [1]})
            # benchmarks/freshness.py: did the unsigned champion load and answer?
            record_property("unsigned_model_loaded", answer.status_code == 200)
            assert ready.status_code == 503
            assert (
                f"model {name} version {unsigned}: artifacts carry no hash (tag "
                f"{tracking.HASH_TAG})"
            ) in ready.text
            assert answer.status_code == 503 and "carry no hash" in answer.text
        # The owner checks it and signs it: then it loads.
        signed = run_cli(settings, "models", "sign", name)
        assert signed.returncode == 0, signed.stdout + signed.stderr
        assert f"{name} v{unsigned}: signed" in signed.stdout
        assert load_champion(name).version == str(unsigned)
    finally:
        client.set_registered_model_alias(name, tracking.CHAMPION, current.version)


def test_a_champion_from_an_older_omnishelf_is_named_not_served(workspace):
    # A forecaster pickled by an older omnishelf, from before its current inputs.
    name = workspace["settings"].forecaster_name
    current = tracking.champion_version(name)
    model, _ = tracking.load_champion(name)
    del model.format_version_
    with mlflow.start_run(run_name="old-format-test"):
        old = tracking.register(model, name, dict(current.tags))
    try:
        champion = load_champion(name)
        assert champion.model is None
        assert champion.problem.startswith(
            f"the champion of {name} (version {old}) cannot be used: it was fitted by an older"
        )
        # The batch restock refuses it the same way, before reading any feature.
        with pytest.raises(LookupError, match=f"version {old}.* cannot be used: it was fitted"):
            restock_orders(workspace["settings"])
    finally:
        MlflowClient().set_registered_model_alias(name, tracking.CHAMPION, current.version)


def _reminders(client: httpx.Client, customer: int) -> dict:
    answer = client.post("/reminders", json={"customer_id": customer, "n": 20})
    assert answer.status_code == 200, answer.text
    return answer.json()


def _due(answer: dict) -> dict[int, float]:
    return {r["product_id"]: r["due_in_days"] for r in answer["reminders"]}


def test_reminders_count_down_when_a_later_day_is_materialised_without_retraining(
    workspace, tmp_path, record_property
):
    """The figure `reminder_due_days_advance`. A workspace of its own: it adds a day to the
    data, which the shared workspace's other tests must not see."""
    tables = workspace["tables"]
    last_day = tables["transactions"][TS].max().normalize()
    settings = Settings(home=tmp_path)
    try:
        tracking.configure(
            settings.resolved_tracking_uri, settings.experiment, settings.mlruns_dir / "artifacts"
        )
        steps.ingest(settings, steps.Source("shop", lambda: _until(tables, last_day), "D", "US"))
        steps.build_features(settings)
        steps.train_recommender(settings)
        # No forecaster here: the service is not "ready", but it serves the recommender.
        with running_service(tmp_path, OMNISHELF_RELOAD_SECONDS="1") as client:
            sales = tables["transactions"]
            shopped_last_day = set(sales.loc[sales[TS] >= last_day, CUSTOMER_ID])
            waiting = [c for c in sales[CUSTOMER_ID].unique() if c not in shopped_last_day]
            for customer in waiting[:50]:
                answer = _reminders(client, int(customer))
                due = {p: d for p, d in _due(answer).items() if d >= 2}
                if due:
                    break
            assert due, "no customer without a purchase on the last day has a reminder due"
            # One more day of data, the customer not buying: materialised, not retrained.
            steps.ingest(settings, steps.Source("shop", lambda: tables, "D", "US"), force=True)
            result, _ = steps.build_features(settings)
            assert result.status == "extended"
            deadline = time.monotonic() + 120
            while (later := _reminders(client, int(customer))) == answer:
                assert time.monotonic() < deadline, "the service never answered for the new day"
                time.sleep(0.5)
            advanced = _due(later)
            counted_down = all(abs(advanced.get(p, -99) - (d - 1)) <= 0.11 for p, d in due.items())
            record_property("reminder_due_days_advance", counted_down)  # benchmarks/freshness.py
            assert {p: advanced.get(p) for p in due} == pytest.approx(
                {p: d - 1 for p, d in due.items()}, abs=0.11
            )
            assert later["model_version"] == answer["model_version"]
    finally:
        shared = workspace["settings"]
        tracking.configure(
            shared.resolved_tracking_uri, shared.experiment, shared.mlruns_dir / "artifacts"
        )
