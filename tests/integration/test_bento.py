"""`bentoml build` from the repo: the Bento holds the service's packages and the tested pins."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def test_bentoml_build_packs_the_service_with_the_locked_pins(tmp_path):
    bentoml = Path(sys.executable).parent / "bentoml"
    env = {**os.environ, "BENTOML_HOME": str(tmp_path), "BENTOML_DO_NOT_TRACK": "true"}
    built = subprocess.run(
        [str(bentoml), "build", "--output", "tag"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    [bento] = [p for p in (tmp_path / "bentos" / "omnishelf").iterdir() if p.is_dir()]
    sources = {p.relative_to(bento / "src").as_posix() for p in (bento / "src").rglob("*.py")}
    assert {"serving/service.py", "features/feature_store.py", "training/recommender.py"} <= (
        sources
    )
    assert not any(s.startswith(("tests/", "benchmarks/", "pipelines/")) for s in sources)
    pins = (bento / "env" / "python" / "requirements.txt").read_text()
    locked = [
        line for line in (ROOT / "requirements.lock").read_text().splitlines() if "==" in line
    ]
    assert all(line in pins for line in locked)
    routes = {
        r["route"] for r in yaml.safe_load((bento / "bento.yaml").read_text())["schema"]["routes"]
    }
    assert {"/recommend", "/recommend/batch", "/reminders", "/forecast", "/restock"} <= routes
