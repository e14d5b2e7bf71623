"""`omnishelf report` on the session's synthetic workspace, and the page in headless Chromium."""

import json
import os
import shutil
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from features.errors import UserInputError
from pipelines import report as report_module
from tests.integration.conftest import run_cli

pytestmark = pytest.mark.integration

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def report(workspace, tmp_path_factory):
    """The report with an alert rule that store 1's stockouts break and a clean rule set."""
    settings = workspace["settings"]
    folder = tmp_path_factory.mktemp("report") / "page"
    os.environ["OMNISHELF_ALERTS"] = '["stockout_rate > 0.0", "fill_rate < 0.0"]'
    try:
        done = run_cli(settings, "report", "--check", "--out", str(folder), timeout=300)
    finally:
        del os.environ["OMNISHELF_ALERTS"]
    return {
        "done": done,
        "folder": folder,
        "numbers": json.loads((folder / "kpis.json").read_text()),
    }


def test_report_checks_alerts_and_writes_the_numbers(workspace, report):
    done, numbers = report["done"], report["numbers"]
    # A breached rule makes `--check` fail, so a scheduler can page someone.
    assert done.returncode == 1, done.stdout + done.stderr
    assert "stockout_rate > 0" in done.stdout
    assert {a["scope"] for a in numbers["alerts"]} >= {"store 1", "all stores"}
    assert not any(a["rule"].startswith("fill_rate") for a in numbers["alerts"])
    summary = numbers["summary"]
    assert summary["stock_source"] == "observed"
    # Stockouts counted by hand: days whose sales reached the morning's stock, in the last 28.
    tables = workspace["tables"]
    inventory, sales = tables["inventory"], tables["transactions"]
    day = sales["ts"].max().normalize()
    recent = inventory[inventory["date"] > day - pd.Timedelta(days=28)]
    recent = recent[recent["date"] <= day]
    sold = (
        sales.assign(date=sales["ts"].dt.normalize())
        .groupby(["store_id", "product_id", "date"])["quantity"]
        .sum()
        .rename("sold")
    )
    joined = recent.join(sold, on=["store_id", "product_id", "date"]).fillna({"sold": 0.0})
    assert summary["stockout_rate"] == pytest.approx((joined["sold"] >= joined["on_hand"]).mean())
    active = sales.loc[sales["ts"] >= day - pd.Timedelta(days=27), "customer_id"].nunique()
    assert summary["active_customers"] == active
    assert summary["units_to_order"] > 0 and summary["alerts"] == len(numbers["alerts"])
    for name in ("stock_by_store", "stock_by_category", "churn_risk", "restock_orders_by_store"):
        assert (report["folder"] / f"{name}.csv").stat().st_size > 0
    models = pd.read_csv(report["folder"] / "models.csv")
    assert set(models["metric"]) >= {"recall_at_10", "wape", "p90_coverage"}
    # The page is an artifact of the run that made it.
    run = mlflow.search_runs(
        filter_string="tags.kind = 'report'", order_by=["start_time DESC"], output_format="list"
    )[0]
    assert run.data.metrics["stockout_rate"] == pytest.approx(summary["stockout_rate"])
    listed = [f.path for f in mlflow.MlflowClient().list_artifacts(run.info.run_id, "report")]
    assert "report/report.html" in listed


def test_report_without_breaches_passes_the_check_and_bad_input_is_named(workspace, tmp_path):
    settings = workspace["settings"]
    os.environ["OMNISHELF_ALERTS"] = "[]"
    try:
        clean = run_cli(settings, "report", "--check", "--out", str(tmp_path / "a"), timeout=300)
    finally:
        del os.environ["OMNISHELF_ALERTS"]
    assert clean.returncode == 0, clean.stdout + clean.stderr
    # Bad input fails before any work, in the command's own words (exit code 2, no traceback:
    # the CLI's handling of UserInputError is tested with the other commands).
    with pytest.raises(UserInputError, match="unknown metric 'stockouts'"):
        report_module.build_report(settings.model_copy(update={"alerts": ["stockouts > 0.2"]}))
    with pytest.raises(UserInputError, match="outside the data"):
        report_module.build_report(settings, pd.Timestamp("2099-01-01"))


def require_chromium() -> None:
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if shutil.which(path) is None]
    if missing:
        message = f"{', '.join(missing)} missing (`make test` installs Debian's chromium)"
        if os.environ.get("OMNISHELF_REQUIRE_SERVICES") == "1":
            pytest.fail(message)
        pytest.skip(message)


def test_the_page_shows_alerts_and_charts_in_headless_chromium(report, tmp_path):
    require_chromium()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--window-size=1280,2000",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        driver.get(Path(report["folder"] / "report.html").as_uri())
        alerts = driver.find_element(By.ID, "alerts")
        assert alerts.is_displayed() and "stockout_rate > 0" in alerts.text
        charts = driver.find_elements(By.CSS_SELECTOR, "img.chart")
        assert len(charts) == 3
        for chart in charts:
            assert chart.is_displayed()
            assert driver.execute_script("return arguments[0].naturalWidth", chart) > 100
        assert "Churn risk" in driver.find_element(By.ID, "customers").text
        errors = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
        assert errors == []
    finally:
        driver.quit()
