"""Forecasts start from the newest materialised day: a later week moves them without a retrain."""

from dataclasses import replace

import pandas as pd
import pytest

from features import synthetic
from features.feature_store import read_offline_table
from features.settings import Settings
from pipelines import steps
from tests.integration.conftest import SMALL, run_cli, running_service
from training import tracking
from training.forecast_plan import read_plan

pytestmark = pytest.mark.integration

WEEK = pd.Timedelta(days=7)


def _cut(tables: dict[str, pd.DataFrame], before: pd.Timestamp) -> dict[str, pd.DataFrame]:
    """The tables as they stood on the evening before `before`: promotions are planned ahead
    and stay whole."""
    dated = {"transactions": "ts", "inventory": "date", "calendar": "date", "true_demand": "date"}
    return {
        name: frame[frame[dated[name]] < before].reset_index(drop=True) if name in dated else frame
        for name, frame in tables.items()
    }


def _served_forecast(settings: Settings, model, store_id: int, products: list[int], stamp):
    """What the champion forecasts from the offline features stamped `stamp`: the lags of the
    days before it."""
    table = read_offline_table(settings, "store_product_demand")
    at = table[
        (table["event_timestamp"] == stamp)
        & (table["store_id"] == store_id)
        & table["product_id"].isin(products)
    ]
    inputs = at[["store_id", "product_id", "event_timestamp", *model.input_names_]]
    plan = read_plan(settings.tables_dir, model.series_.get_level_values(1), model.country)
    return model.predict(inputs, plan).set_index(["product_id", "period"])["forecast"]


def _units(answer: dict) -> pd.Series:
    return pd.Series(
        {
            (f["product_id"], pd.Timestamp(p["period_start"])): p["units"]
            for f in answer["forecasts"]
            for p in f["periods"]
        }
    )


@pytest.fixture
def own_registry(tmp_path, workspace):
    """A workspace and registry of this test's own; MLflow points back at the shared ones
    afterwards, pass or fail, so that later tests do not read this test's registry."""
    settings = Settings(home=tmp_path / "workspace")
    tracking.configure(
        settings.resolved_tracking_uri, settings.experiment, settings.mlruns_dir / "artifacts"
    )
    yield settings
    shared = workspace["settings"]
    tracking.configure(
        shared.resolved_tracking_uri, shared.experiment, shared.mlruns_dir / "artifacts"
    )


def test_a_later_week_moves_origin_lags_and_dates_without_retraining(own_registry, record_property):
    settings = own_registry
    config = replace(SMALL, days=SMALL.days + 7)
    tables = synthetic.generate(config)
    last_day = tables["transactions"]["ts"].max().normalize()
    week_before = last_day - WEEK
    cutoff = week_before + pd.Timedelta(days=1)
    source = steps.Source("synthetic-until-last-week", lambda: _cut(tables, cutoff), "D", "US")
    steps.ingest(settings, source)
    steps.build_features(settings)
    steps.train_forecaster(settings)
    model, version = tracking.load_champion(settings.forecaster_name)
    series = model.series_.to_frame(index=False)
    store_id = int(series["store_id"].iloc[0])
    products = [int(p) for p in series.loc[series["store_id"] == store_id, "product_id"][:2]]
    body = {"store_id": store_id, "product_ids": products, "horizon_days": 28}

    with running_service(settings.home) as service:
        before = service.post("/forecast", json=body).json()
        assert pd.Timestamp(before["origin"]) == week_before, before
        # The next week arrives and is materialised; the service keeps running, no retrain.
        later = steps.Source("synthetic-with-last-week", lambda: tables, "D", "US")
        steps.ingest(settings, later)
        built, _ = steps.build_features(settings)
        assert built.status == "extended"
        after = service.post("/forecast", json=body).json()
        as_of = service.post("/forecast", json={**body, "as_of": f"{week_before:%Y-%m-%d}"})
        too_late = service.post("/forecast", json={**body, "as_of": "2099-01-01"})
        too_early = service.post("/forecast", json={**body, "as_of": "2000-01-01"})

    forecast_origin_lag_days = (last_day - pd.Timestamp(after["origin"])).days
    record_property("forecast_origin_lag_days", forecast_origin_lag_days)  # benchmarks/freshness
    assert forecast_origin_lag_days == 0
    assert (
        after["model_version"] == before["model_version"] == f"{settings.forecaster_name}/{version}"
    )
    first = [pd.Timestamp(f["periods"][0]["period_start"]) for f in after["forecasts"]]
    assert first == [last_day + pd.Timedelta(days=1)] * len(products)
    moved = _units(after).index.get_level_values(1) - _units(before).index.get_level_values(1)
    assert (moved == WEEK).all()
    # The lags used are the new week's: the answer is the model's forecast from them.
    fresh = _served_forecast(settings, model, store_id, products, last_day + pd.Timedelta(days=1))
    pd.testing.assert_series_equal(
        _units(after), fresh.round(3).reindex(_units(after).index), check_names=False, atol=1e-3
    )
    # Asked as of the week before, the running service answers as it did then.
    assert as_of.status_code == 200 and as_of.json()["origin"] == before["origin"]
    pd.testing.assert_series_equal(_units(as_of.json()), _units(before), atol=1e-3)
    for refused in (too_late, too_early):
        assert refused.status_code == 422 and refused.json()["field"] == "as_of", refused.text

    # `omnishelf restock`, run the morning after, orders from the new week too.
    orders_file = settings.home / "orders.csv"
    done = run_cli(settings, "restock", "--output", str(orders_file), timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    order_days = pd.read_csv(orders_file)["order_date"].unique().tolist()
    assert order_days == [f"{last_day + pd.Timedelta(days=1):%Y-%m-%d}"]
    bad = run_cli(settings, "restock", "--as-of", "2099-01-01", timeout=300)
    assert bad.returncode == 2 and "--as-of" in bad.stdout, bad.stdout + bad.stderr
