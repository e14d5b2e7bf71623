"""The forecaster on a real 2-worker Dask cluster (`lightgbm.dask`) against the same model trained
in one process on the same data."""

import mlflow
import numpy as np
import pandas as pd
import pytest
from distributed import Client, LocalCluster

from features import synthetic
from features.engineering import EVENT_TIMESTAMP, PERIOD, demand_panel, store_product_features
from pipelines import steps
from training import tracking
from training.forecast_plan import ForecastPlan
from training.forecaster import DemandForecaster
from training.metrics import wape

pytestmark = pytest.mark.integration

CONFIG = synthetic.SyntheticConfig(
    n_customers=400, n_stores=3, n_products=40, n_categories=4, days=150, seed=5
)


@pytest.fixture(scope="module")
def client():
    # Processes, not threads: LightGBM's network is one per process.
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


def test_training_on_the_cluster_matches_one_process(client):
    tables = synthetic.generate(CONFIG)
    panel = demand_panel(tables, "D")
    features = store_product_features(panel, "D", tables)
    grid = pd.DatetimeIndex(np.sort(panel[PERIOD].unique()))
    origin = grid[-28]
    stamp = features[EVENT_TIMESTAMP]
    training = features[(stamp < origin) & (stamp >= grid[14])]
    history = panel[panel[PERIOD] < origin]
    actual = panel[panel[PERIOD] >= origin]

    def holdout_wape(fit_client) -> tuple[float, DemandForecaster]:
        model = DemandForecaster("D").fit(
            training,
            history,
            tables["promotions"],
            tables["calendar"],
            tables["products"],
            client=fit_client,
        )
        plan = ForecastPlan(tables["promotions"], tables["calendar"], model.country)
        predicted = model.predict(features[stamp == origin], plan)
        scored = predicted.merge(actual, on=["store_id", "product_id", PERIOD])
        return wape(scored["units"], scored["forecast"]), model

    local_wape, local = holdout_wape(None)
    cluster_wape, distributed = holdout_wape(client)
    print(f"holdout WAPE: one process {local_wape:.4f}, 2-worker cluster {cluster_wape:.4f}")
    assert distributed.training_rows_ == local.training_rows_
    assert abs(cluster_wape - local_wape) <= 0.02 * local_wape, (cluster_wape, local_wape)
    # Both calibrated their quantiles; the cluster's model serves like the local one.
    assert distributed.residual_quantiles_.shape == local.residual_quantiles_.shape
    assert set(distributed.feature_importance().index) == set(local.feature_importance().index)


def test_naming_a_scheduler_in_the_settings_moves_pipeline_training_there(client, workspace):
    settings = workspace["settings"].model_copy(update={"dask_scheduler": client.scheduler.address})
    result = steps.train_forecaster(settings, force=True)
    assert result.status.startswith("built v")
    version = tracking.champion_version(settings.forecaster_name)
    run = mlflow.get_run(version.run_id)
    assert run.data.tags["trained_on"] == f"dask {client.scheduler.address}"
    assert run.data.metrics["wrmsse_omnishelf"] > 0
