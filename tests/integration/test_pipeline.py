"""The pipeline on small synthetic data: figures on a time holdout, registry, idempotent reruns."""

import json

import mlflow
import numpy as np
import pandas as pd
import pytest

from features.dataset import load_info
from features.identity import resolved_tables
from features.settings import Settings
from pipelines import steps
from tests.integration.conftest import run_cli
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
    assert recommender["holdout_recall_at_10"] > 0
    assert recommender["holdout_best_baseline_recall_at_10"] > 0
    assert 0 < forecaster["holdout_wrmsse"] <= forecaster["holdout_wrmsse_best_stat"] * 1.1
    assert 0.5 < forecaster["holdout_p90_coverage"] <= 1


def test_forecaster_run_logs_accuracy_and_business_kpis(workspace):
    version = tracking.champion_version(workspace["settings"].forecaster_name)
    run = mlflow.get_run(version.run_id)
    metrics = run.data.metrics
    # Every baseline scored on the same rolling origins, the final model against seasonal naive.
    for model in steps.STEP_STAT_MODELS:
        assert metrics[f"wrmsse_{model}"] > 0
    assert metrics["wrmsse_omnishelf"] < metrics["wrmsse_seasonal_naive"]
    # The reported figures are the holdout's, the last window, whose start the params record.
    origins = run.data.tags["backtest_origins"].split(",")
    assert run.data.params["holdout_start"] == origins[-1]
    assert run.data.params["validation_origins"] == ",".join(origins[:-1])
    assert metrics["holdout_wrmsse"] > 0 and 0 < metrics["holdout_p90_coverage"] <= 1
    for kpi in ("stockout_rate", "fill_rate", "avg_on_hand", "inventory_turns"):
        assert f"{kpi}_policy" in metrics and f"{kpi}_baseline" in metrics
    assert 0 <= metrics["stockout_rate_policy"] <= 1 and 0 < metrics["fill_rate_policy"] <= 1
    # The baseline is compared at equal or higher stock than the policy holds.
    assert metrics["avg_on_hand_baseline"] >= metrics["avg_on_hand_policy"]
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(version.run_id)}
    expected = {"forecast_vs_actual.png", "stock_vs_stockouts.png", "backtest_table.json"}
    assert expected <= artifacts


def test_champions_are_registered_with_their_data_and_logged_figures(workspace):
    settings = workspace["settings"]
    for name, artifact in (
        (settings.recommender_name, "time_split"),
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


def test_the_served_recommender_is_refit_up_to_the_datas_last_day(workspace):
    version = tracking.champion_version(workspace["settings"].recommender_name)
    last_day = workspace["tables"]["transactions"]["ts"].max()
    assert version.tags["fit_until"] == f"{last_day:%Y-%m-%d}"
    # Its figures are the evaluation's, whose ranker learned only before the holdout's cut-off.
    evaluation = mlflow.get_run(version.tags["metrics_of"])
    cutoff = pd.Timestamp(evaluation.data.tags["holdout_window"].split(" .. ")[1])
    assert cutoff.normalize() < last_day.normalize()
    assert evaluation.data.metrics["omnishelf_recall_at_10"] > 0


def test_reruns_reuse_what_is_built(workspace):
    settings = workspace["settings"]
    before = tracking.champion_version(settings.recommender_name).version
    assert steps.train_recommender(settings).status == "reused"
    assert steps.train_forecaster(settings).status == "reused"
    result, summaries = steps.build_features(settings)
    assert all(s.rows == 0 for s in summaries), "a rerun must not materialise again"
    assert tracking.champion_version(settings.recommender_name).version == before


def test_customers_cli_shows_the_audit_and_names_unknown_ids(workspace):
    settings = workspace["settings"]
    _, identity_map, _ = resolved_tables(settings, [])
    joined = identity_map[identity_map["customer_id"] != identity_map["source_customer_id"]]
    customer = int(joined["customer_id"].iloc[0])
    shown = run_cli(settings, "customers", "show", str(customer))
    assert shown.returncode == 0, shown.stderr
    theirs = identity_map.loc[identity_map["customer_id"] == customer, "identity_key"]
    assert all(key in shown.stdout for key in theirs)

    missing = run_cli(settings, "customers", "forget", "99999999")
    assert missing.returncode == 2
    assert "unknown customer_id 99999999" in missing.stdout and "Traceback" not in missing.stderr
    bad_merge = run_cli(settings, "customers", "merge", "store:nobody", theirs.iloc[0])
    assert bad_merge.returncode == 2 and "unknown identity 'store:nobody'" in bad_merge.stdout


def test_evaluate_cli_scores_both_protocols_on_the_workspace_data(workspace, tmp_path):
    settings = workspace["settings"]
    output = tmp_path / "evaluation.json"
    done = run_cli(settings, "evaluate", "recommender", "--output", str(output), timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    for title in ("time_split:", "next_basket:", "gp_topfreq_decay", "by segment"):
        assert title in done.stdout
    tables = json.loads(output.read_text())
    for protocol in ("time_split", "next_basket"):
        models = {row["model"]: row for row in tables[protocol]}
        assert {"omnishelf", "gp_topfreq_decay", "als", "item_item_bm25", "popular"} <= set(models)
        assert 0 < models["omnishelf"]["recall_at_10"] <= 1
    bad = run_cli(settings, "evaluate", "recommender", "--protocol", "leave_one_out")
    assert bad.returncode == 2 and "time_split, next_basket or both" in bad.stdout + bad.stderr


def test_backtest_cli_prints_both_tables_with_every_baseline(workspace, tmp_path):
    settings = workspace["settings"]
    output = tmp_path / "backtest.json"
    done = run_cli(settings, "backtest", "--output", str(output), timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    for title in ("forecast accuracy", "restock replay", "AutoETS", "moving_average_cover"):
        assert title in done.stdout
    tables = json.loads(output.read_text())
    models = {row["model"] for row in tables["backtest"]}
    assert {"omnishelf", "seasonal_naive", "AutoETS", "CrostonOptimized", "ADIDA"} <= models
    assert {row["policy"] for row in tables["simulation"]} == {"omnishelf", "moving_average_cover"}


def test_restock_cli_writes_an_order_file_and_names_bad_stock_files(workspace, tmp_path):
    settings = workspace["settings"]
    model, _ = tracking.load_champion(settings.forecaster_name)
    keys = model.series_.to_frame(index=False)
    stock = keys.assign(on_hand=[0.0] + [1_000.0] * (len(keys) - 1))
    stock.to_csv(tmp_path / "stock.csv", index=False)
    orders_file = tmp_path / "orders.csv"
    done = run_cli(
        settings, "restock", "--stock", str(tmp_path / "stock.csv"), "--output", str(orders_file)
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "order lines" in done.stdout
    orders = pd.read_csv(orders_file)
    assert len(orders) == len(keys)
    assert orders["order_quantity"].iloc[0] > 0 and (orders["order_quantity"].iloc[1:] == 0).all()
    assert (orders["order_up_to"] >= orders["expected_demand"]).all()

    stock.drop(columns="on_hand").to_csv(tmp_path / "no_stock.csv", index=False)
    bad = run_cli(settings, "restock", "--stock", str(tmp_path / "no_stock.csv"))
    assert bad.returncode == 2 and "no_stock.csv: missing column 'on_hand'" in bad.stdout
    stock.assign(on_hand=-1).to_csv(tmp_path / "negative.csv", index=False)
    bad = run_cli(settings, "restock", "--stock", str(tmp_path / "negative.csv"))
    assert bad.returncode == 2 and "column 'on_hand' needs numbers >= 0; row 2" in bad.stdout
    assert "Traceback" not in bad.stderr
    pd.concat([stock, stock.head(1)]).to_csv(tmp_path / "repeated.csv", index=False)
    bad = run_cli(settings, "restock", "--stock", str(tmp_path / "repeated.csv"))
    assert bad.returncode == 2 and "repeat on row" in bad.stdout
    (tmp_path / "empty.csv").write_text("")
    bad = run_cli(settings, "restock", "--stock", str(tmp_path / "empty.csv"))
    assert bad.returncode == 2 and "empty.csv: not a readable CSV file" in bad.stdout
    assert "Traceback" not in bad.stderr


def test_backtest_runs_on_weekly_sales_brought_in_with_import(tmp_path):
    """A retailer with only weekly units per store x product (no customers, no baskets)."""
    rng = np.random.default_rng(3)
    weeks = pd.date_range("2023-01-02", periods=40, freq="7D")
    rows = [
        (store, product, week.date(), rng.poisson(rate * (1.3 if week.month == 12 else 1.0)))
        for store in (1, 2)
        for product, rate in ((10, 2.0), (11, 5.0), (12, 9.0))
        for week in weeks
    ]
    sales = pd.DataFrame(rows, columns=["store", "sku", "monday", "units"])
    sales.to_csv(tmp_path / "weekly.csv", index=False)
    (tmp_path / "shop.toml").write_text(
        'name = "weekly-shop"\nfreq = "W"\n[sales]\npath = "weekly.csv"\n[sales.columns]\n'
        'store_id = "store"\nproduct_id = "sku"\ndate = "monday"\nquantity = "units"\n'
    )
    settings = Settings(home=tmp_path / "workspace")
    imported = run_cli(settings, "import", str(tmp_path / "shop.toml"))
    assert imported.returncode == 0, imported.stdout + imported.stderr
    done = run_cli(settings, "backtest", "--output", str(tmp_path / "bt.json"), timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    tables = json.loads((tmp_path / "bt.json").read_text())
    models = {row["model"]: row for row in tables["backtest"]}
    assert {"omnishelf", "seasonal_naive", "AutoETS", "CrostonOptimized"} <= set(models)
    assert all(row["origins"] == 3 for row in models.values())
    # Poisson weekly sales: the naive forecast is the noisiest; the model beats it.
    assert models["omnishelf"]["wrmsse"] < models["seasonal_naive"]["wrmsse"]
    assert {row["policy"] for row in tables["simulation"]} == {"omnishelf", "moving_average_cover"}
