"""Forget reaches the models: a forgotten customer is queued for removal from the registered
recommender, the next training leaves them out and empties the queue, and a failed training
keeps it. A workspace of its own, since forgetting and retraining change what other tests read."""

import pytest

from features import synthetic
from features.contract import CUSTOMER_ID
from features.identity import resolved_tables
from features.model_removals import pending_removals
from features.settings import Settings
from pipelines import customers, steps
from tests.integration.conftest import run_cli
from training import tracking

pytestmark = pytest.mark.integration

TINY = synthetic.SyntheticConfig(
    n_customers=150, n_stores=2, n_products=30, n_categories=3, days=120, seed=3
)


@pytest.fixture(scope="module")
def shop(tmp_path_factory, workspace):
    settings = Settings(home=tmp_path_factory.mktemp("forget"))
    tracking.configure(
        settings.resolved_tracking_uri, settings.experiment, settings.mlruns_dir / "artifacts"
    )
    tables = synthetic.generate(TINY)
    steps.ingest(settings, steps.Source("synthetic-forget", lambda: tables, "D", "US"))
    steps.build_features(settings)
    yield settings
    shared = workspace["settings"]  # MLflow is process-wide: back to the shared workspace
    tracking.configure(
        shared.resolved_tracking_uri, shared.experiment, shared.mlruns_dir / "artifacts"
    )


def queued(settings) -> list[int]:
    return pending_removals(settings.identity_dir)[CUSTOMER_ID].tolist()


def test_forget_reaches_the_next_recommender_and_a_failed_training_keeps_the_queue(
    shop, monkeypatch
):
    settings = shop
    sales = resolved_tables(settings, ["transactions"])[0]["transactions"]
    buyers = sales[CUSTOMER_ID].drop_duplicates()
    customer = int(buyers.iloc[-1])
    said = run_cli(settings, "customers", "forget", str(customer))
    assert said.returncode == 0, said.stdout + said.stderr
    assert "removed from the next model, at the next `omnishelf train recommender` run" in (
        " ".join(said.stdout.split())
    )
    customers.forget(settings, customer)  # a second forget queues them once
    assert queued(settings) == [customer]

    def registry_down(*args, **kwargs):
        raise ConnectionError("registry down")

    with monkeypatch.context() as patched:
        patched.setattr(tracking, "register", registry_down)
        with pytest.raises(ConnectionError):
            steps.train_recommender(settings)
    assert queued(settings) == [customer]

    steps.train_recommender(settings)
    model, _ = tracking.load_champion(settings.recommender_name)
    assert customer not in set(model.history_.customer_index)
    assert int(buyers.iloc[0]) in set(model.history_.customer_index)  # the others are in
    assert queued(settings) == []
