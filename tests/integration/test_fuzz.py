"""Schemathesis against the real server's OpenAPI spec: whatever a caller sends, never a 5xx.

A few cases per operation here; benchmarks/serving_faults.py fuzz runs hundreds.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

EXAMPLES = 20


def test_fuzzed_requests_get_no_server_error(service, tmp_path):
    har = tmp_path / "requests.har"
    schemathesis = Path(sys.executable).parent / "schemathesis"
    completed = subprocess.run(
        [
            str(schemathesis),
            "run",
            f"{str(service.base_url).rstrip('/')}/docs.json",
            "--checks=not_a_server_error",
            f"--max-examples={EXAMPLES}",
            "--phases=examples,coverage,fuzzing",
            "--seed=6",
            "--no-shrink",
            "--suppress-health-check=all",
            "--request-timeout=30",
            "--report=har",
            f"--report-har-path={har}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,  # where schemathesis keeps its cache (.schemathesis/)
    )
    assert har.exists(), completed.stdout[-3000:] + completed.stderr[-3000:]
    entries = json.loads(har.read_text())["log"]["entries"]
    errors = [
        f"{e['request']['method']} {e['request']['url']} {e['request'].get('postData')} "
        f"-> {e['response']['status']}"
        for e in entries
        if e["response"]["status"] >= 500
    ]
    assert not errors, "\n".join(errors[:10])
    assert completed.returncode == 0, completed.stdout[-3000:]
    assert len(entries) > 50


def test_form_bodies_are_refused_before_bentoml_parses_them(service):
    # BentoML parses a form body itself and answered a malformed one with a 500.
    for kind in ("multipart/form-data", "application/x-www-form-urlencoded"):
        answer = service.post(
            "/recommend", content=b'{"customer_id": 1}', headers={"content-type": kind}
        )
        assert answer.status_code == 415, kind
        assert answer.json()["field"] == "Content-Type"
