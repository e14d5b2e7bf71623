"""Honest figures and fresh answers: the figures of issue 27, measured by the tests that guard them.

    .venv/bin/python benchmarks/freshness.py    # writes benchmarks/results/freshness.json

1. Four figures come from integration tests that start the real server on a real workspace;
   each test records the value it measured (pytest's `record_property`) before asserting on it,
   and this script reads the values back from the JUnit XML report, so the figure is what was
   measured, not the assertion's threshold:
   - `forecast_origin_lag_days`: days between the newest materialised day and the forecast's
     origin, after a later week is materialised without retraining;
   - `reminder_due_days_advance`: a day later, a reminder's `due_in_days` is one less;
   - `readyz_secret_leaks`: times the tracking URI's password appears in /readyz or the log;
   - `unsigned_model_loaded`: whether a champion whose artifacts carry no recorded hash loads.
2. `leak_tests`: the unit tests that fail if an evaluation looks past its cut-off (named `leak`).
3. `p90_coverage_min` / `_max`: P90 coverage over every backtest that benchmarks/forecast.py
   publishes (Complete Journey's final weeks and rolling origins, the synthetic retailer), read
   from benchmarks/results/forecast.json: run that benchmark first.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ElementTree
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "freshness.json"
FORECAST_RESULTS = ROOT / "benchmarks" / "results" / "forecast.json"

# In file order: the reminder test changes the lifecycle workspace, so it runs last of its file.
FIGURE_TESTS = (
    "tests/integration/test_fresh_forecasts.py::"
    "test_a_later_week_moves_origin_lags_and_dates_without_retraining",
    "tests/integration/test_service.py::test_readyz_and_the_log_never_carry_the_tracking_password",
    "tests/integration/test_service_lifecycle.py::test_an_unsigned_champion_is_not_loaded",
    "tests/integration/test_service_lifecycle.py::"
    "test_reminders_count_down_when_a_later_day_is_materialised_without_retraining",
)
FIGURES = (
    "forecast_origin_lag_days",
    "reminder_due_days_advance",
    "readyz_secret_leaks",
    "unsigned_model_loaded",
)


def measured_by_tests() -> dict[str, object]:
    """Run the figure tests and read back the values each recorded."""
    with tempfile.TemporaryDirectory() as scratch:
        report = Path(scratch) / "report.xml"
        subprocess.run(
            [sys.executable, "-m", "pytest", "-q", f"--junitxml={report}", *FIGURE_TESTS],
            cwd=ROOT,
            check=True,
        )
        tree = ElementTree.parse(report)
    recorded = {
        prop.get("name"): ast.literal_eval(prop.get("value"))  # pytest writes str(value)
        for prop in tree.iter("property")
        if prop.get("name") in FIGURES
    }
    missing = sorted(set(FIGURES) - set(recorded))
    if missing:
        raise SystemExit(f"no test recorded {', '.join(missing)}")
    return recorded


def leak_test_count() -> int:
    listed = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/unit", "-k", "leak", "--collect-only", "-q"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return sum("::" in line for line in listed.splitlines())


def p90_coverages() -> dict[str, float]:
    published = json.loads(FORECAST_RESULTS.read_text())
    coverages = [value for key, value in published.items() if key.endswith("p90_coverage")]
    if not coverages:
        raise SystemExit(f"{FORECAST_RESULTS} holds no p90_coverage: run benchmarks/forecast.py")
    return {"p90_coverage_min": min(coverages), "p90_coverage_max": max(coverages)}


def main() -> None:
    figures = {**measured_by_tests(), "leak_tests": leak_test_count(), **p90_coverages()}
    RESULTS.write_text(json.dumps(figures, indent=2) + "\n")
    for name, value in figures.items():
        print(f"{name:28} {value}")


if __name__ == "__main__":
    main()
