"""The KPI report on Complete Journey: its figures, its wall time and the docs' screenshot.

    .venv/bin/python benchmarks/report_page.py   # -> results/report.json and results/report.png

Works in the default workspace (the demo's data, features and champions). Complete Journey has
no stock levels, so its stock figures are the champion forecaster's simulated replay. The
screenshot is Debian's Chromium, headless, on the page as written (`make test` installs it).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipelines import report, steps  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def main() -> None:
    settings = steps.complete_journey_workspace()
    began = time.perf_counter()
    built = report.build_report(settings)
    folder = settings.data_dir / "reports" / f"{built.day:%Y-%m-%d}"
    files = report.write_report(built, folder)
    report.log_report(built, folder)
    seconds = time.perf_counter() - began
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [
                "/usr/bin/chromium",
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--hide-scrollbars",
                f"--user-data-dir={profile}",
                "--window-size=1280,1500",
                f"--screenshot={RESULTS / 'report.png'}",
                files["html"].as_uri(),
            ],
            check=True,
            capture_output=True,
        )
    figures = {
        k: round(v, 4) if isinstance(v, float) else v for k, v in built.summary().items()
    } | {"report_s": round(seconds, 1), "alert_rules": settings.alerts}
    print(figures)
    print(built.alerts.to_string())
    steps.write_results(RESULTS / "report.json", figures)


if __name__ == "__main__":
    main()
