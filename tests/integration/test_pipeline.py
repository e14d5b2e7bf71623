"""The pipeline on small synthetic data: figures on a time holdout, registry, idempotent reruns."""

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

from features.dataset import load_info
from features.identity import resolved_tables
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
    assert recommender["omnishelf_recall_at_10"] > 0
    assert recommender["best_baseline_recall_at_10"] > 0
    assert 0 < forecaster["forecast_wape"] < forecaster["snaive_wape"]


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


def test_reruns_reuse_what_is_built(workspace):
    settings = workspace["settings"]
    before = tracking.champion_version(settings.recommender_name).version
    assert steps.train_recommender(settings).status == "reused"
    assert steps.train_forecaster(settings).status == "reused"
    result, summaries = steps.build_features(settings)
    assert all(s.rows == 0 for s in summaries), "a rerun must not materialise again"
    assert tracking.champion_version(settings.recommender_name).version == before


def _cli(settings, *arguments: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMNISHELF_HOME": str(settings.home), "COLUMNS": "200"}
    omnishelf = Path(sys.executable).parent / "omnishelf"
    return subprocess.run(
        [str(omnishelf), *arguments], env=env, capture_output=True, text=True, timeout=timeout
    )


def test_customers_cli_shows_the_audit_and_names_unknown_ids(workspace):
    settings = workspace["settings"]
    _, identity_map, _ = resolved_tables(settings, [])
    joined = identity_map[identity_map["customer_id"] != identity_map["source_customer_id"]]
    customer = int(joined["customer_id"].iloc[0])
    shown = _cli(settings, "customers", "show", str(customer))
    assert shown.returncode == 0, shown.stderr
    theirs = identity_map.loc[identity_map["customer_id"] == customer, "identity_key"]
    assert all(key in shown.stdout for key in theirs)

    missing = _cli(settings, "customers", "forget", "99999999")
    assert missing.returncode == 2
    assert "unknown customer_id 99999999" in missing.stdout and "Traceback" not in missing.stderr
    bad_merge = _cli(settings, "customers", "merge", "store:nobody", theirs.iloc[0])
    assert bad_merge.returncode == 2 and "unknown identity 'store:nobody'" in bad_merge.stdout


def test_evaluate_cli_scores_both_protocols_on_the_workspace_data(workspace, tmp_path):
    settings = workspace["settings"]
    output = tmp_path / "evaluation.json"
    done = _cli(settings, "evaluate", "recommender", "--output", str(output), timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    for title in ("time_split:", "next_basket:", "gp_topfreq_decay", "by segment"):
        assert title in done.stdout
    tables = json.loads(output.read_text())
    for protocol in ("time_split", "next_basket"):
        models = {row["model"]: row for row in tables[protocol]}
        assert {"omnishelf", "gp_topfreq_decay", "als", "item_item_bm25", "popular"} <= set(models)
        assert 0 < models["omnishelf"]["recall_at_10"] <= 1
    bad = _cli(settings, "evaluate", "recommender", "--protocol", "leave_one_out")
    assert bad.returncode == 2 and "time_split, next_basket or both" in bad.stdout + bad.stderr
