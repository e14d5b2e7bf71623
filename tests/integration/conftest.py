"""A whole workspace built once per session on small synthetic data: tables, Feast repo, MLflow
store, registered champions; and the real `bentoml serve` answering on a free port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import sqlalchemy

from features import synthetic
from features.settings import Settings
from pipelines import cli, steps
from training import tracking

SMALL = synthetic.SyntheticConfig(
    n_customers=300, n_stores=3, n_products=40, n_categories=4, days=120, seed=11
)


POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
SERVICES = {"PostgreSQL": ("127.0.0.1", 5432), "Redis": ("127.0.0.1", 6379)}


def require_services(*names: str) -> None:
    """Skip without the production profile's services; fail instead when CI requires them."""
    for name in names or SERVICES:
        address = SERVICES[name]
        try:
            socket.create_connection(address, timeout=1).close()
        except OSError as error:
            message = f"{name} on {address[0]}:{address[1]} unreachable ({error})"
            if os.environ.get("OMNISHELF_REQUIRE_SERVICES") == "1":
                pytest.fail(f"{message}; OMNISHELF_REQUIRE_SERVICES=1 requires it")
            pytest.skip(f"{message}: the production profile needs it")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def workspace(tmp_path_factory) -> dict:
    home = tmp_path_factory.mktemp("workspace")
    settings = Settings(home=home)
    tracking.configure(
        settings.resolved_tracking_uri, settings.experiment, settings.mlruns_dir / "artifacts"
    )
    tables = synthetic.generate(SMALL)
    results = {
        "data": steps.ingest(settings, steps.Source("synthetic-small", lambda: tables, "D", "US")),
        "features": steps.build_features(settings)[0],
        "recommender": steps.train_recommender(settings),
        "forecaster": steps.train_forecaster(settings),
    }
    return {"settings": settings, "tables": tables, "results": results}


def run_cli(settings, *arguments: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """The installed `omnishelf` command on the workspace of `settings`."""
    env = {**os.environ, "OMNISHELF_HOME": str(settings.home), "COLUMNS": "200"}
    omnishelf = Path(sys.executable).parent / "omnishelf"
    return subprocess.run(
        [str(omnishelf), *arguments], env=env, capture_output=True, text=True, timeout=timeout
    )


def start_server(home: Path, port: int) -> subprocess.Popen:
    return cli.start_server(Settings(home=home), port)


def wait_until_answering(server: subprocess.Popen, url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert server.poll() is None, f"server exited with {server.returncode}"
        try:
            httpx.get(f"{url}/livez", timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.3)
    raise TimeoutError(f"no answer from {url} within {timeout} s")


def stop(server: subprocess.Popen) -> None:
    server.terminate()
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.kill()


@contextmanager
def running_service(home: Path, **env: str):
    """A client of a real server for the workspace at `home`, started with `env` added to the
    environment, stopped on exit."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = cli.start_server(Settings(home=home), port, env)
    try:
        wait_until_answering(server, url)
        with httpx.Client(base_url=url, timeout=30) as client:
            yield client
    finally:
        stop(server)


def wait_until_ready(client: httpx.Client, timeout: float = 120) -> None:
    """Until /readyz says 200: the service ranks known customers ahead before it is ready."""
    deadline = time.monotonic() + timeout
    while (response := client.get("/readyz")).status_code != 200:
        assert time.monotonic() < deadline, f"not ready within {timeout} s: {response.text}"
        time.sleep(0.3)


# Shallow kept lists (the workspace has 40 products), so that category and stock rules leave
# some requests short of k and the service ranks those in full: both paths are exercised.
SHALLOW_LISTS = "15"


@pytest.fixture(scope="session")
def service(workspace):
    with running_service(workspace["settings"].home, OMNISHELF_RANK_DEPTH=SHALLOW_LISTS) as client:
        wait_until_ready(client)
        yield client


@pytest.fixture
def empty_postgresql_database():
    """A PostgreSQL database of the test's own, with no tables yet (its name), dropped after."""
    require_services("PostgreSQL")
    name = f"omnishelf_test_{uuid.uuid4().hex[:8]}"
    server = sqlalchemy.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with server.connect() as connection:
        connection.execute(sqlalchemy.text(f"CREATE DATABASE {name}"))
    yield name
    with server.connect() as connection:
        connection.execute(sqlalchemy.text(f"DROP DATABASE {name} WITH (FORCE)"))
    server.dispose()
