"""Settings of the whole platform, read once from the environment (prefix OMNISHELF_).

They live in the lowest package so that every layer can be handed them; only entry points (the CLI
and the service) build them.
"""

from __future__ import annotations

from ipaddress import IPv4Address
from pathlib import Path
from typing import Literal

from pydantic import Field, IPvAnyAddress
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="OMNISHELF_", extra="ignore")

    home: Path = Field(default_factory=Path.cwd, description="folder holding data/ and mlruns/")
    tracking_uri: str | None = Field(None, description="MLflow store; default sqlite under mlruns/")
    experiment: str = "omnishelf"
    recommender_name: str = "omnishelf-recommender"
    forecaster_name: str = "omnishelf-forecaster"

    # Feast: the embedded default is SQLite online + file registry; production names Redis + SQL.
    online_store: Literal["sqlite", "redis"] = "sqlite"
    redis_connection: str = "127.0.0.1:6379"
    # A hung Redis must not hang requests: each online read gives up after this long (connect or
    # answer) and /recommend answers from popularity instead.
    redis_timeout_seconds: float = Field(0.25, gt=0)
    registry_url: str | None = Field(None, description="SQLAlchemy URL of a SQL registry")
    feast_project: str = "omnishelf"
    # "data": freshness is judged against the newest materialised data (replayed history such as
    # Complete Journey); "wall": against the clock, as in production.
    feature_clock: Literal["data", "wall"] = "data"

    # Scale-out: with a Dask scheduler's address (tcp://host:8786) the forecaster's training rows
    # are built and LightGBM trained on that cluster; without one, in this process.
    dask_scheduler: str | None = None

    # Optuna studies: SQLite under mlruns/ by default; an RDB URL (PostgreSQL) lets sweep workers
    # on several processes or machines share one study.
    optuna_storage: str | None = None

    # KPI report alerts, `metric op number`, checked on every scope the metric is measured on
    # (each store and all stores, each feature view, each champion); JSON list in the env var.
    alerts: list[str] = [
        "stockout_rate > 0.20",
        "fill_rate < 0.90",
        "feature_age_days > 2",
        "p90_coverage < 0.85",
        "recall_at_10 < 0.05",
    ]

    # Service: how often it checks whether a `champion` alias moved (then loads and swaps in the
    # new version).
    reload_seconds: float = Field(30.0, gt=0)
    # Products kept per customer's ranked list: more memory (about 100 bytes a product) against
    # fewer requests whose rules leave under k of the list, which are then ranked in full.
    rank_depth: int = Field(200, ge=10, le=1000)
    # Where the service listens (an IP address). On a loopback address it may run without keys
    # (one machine); anywhere else it refuses to start without one (serving/access.py).
    host: IPvAnyAddress = IPv4Address("127.0.0.1")
    # Keys an API call may send as `X-API-Key`, comma-separated: any of them is accepted, so a
    # new key is added before the old one is removed. `api_key` is the older single-key form.
    api_keys: str | None = Field(None, repr=False)
    api_key: str | None = Field(None, repr=False)
    # The OpenAPI page and /metrics without a key (they are behind it by default).
    open_docs: bool = False

    # Salt of the phone/email hashes made at import; required when raw contacts are imported.
    identity_salt: str | None = Field(None, repr=False)

    @property
    def data_dir(self) -> Path:
        return self.home.resolve() / "data"

    @property
    def tables_dir(self) -> Path:
        return self.data_dir / "tables"

    @property
    def identity_dir(self) -> Path:
        """The user's decisions on customers (merges, splits, consents, forgotten): kept apart
        from the tables so that reloading a dataset does not undo them."""
        return self.data_dir / "identity"

    @property
    def feast_dir(self) -> Path:
        return self.data_dir / "feast"

    @property
    def mlruns_dir(self) -> Path:
        return self.home.resolve() / "mlruns"

    @property
    def resolved_optuna_storage(self) -> str:
        return self.optuna_storage or f"sqlite:///{self.mlruns_dir / 'optuna.db'}"

    @property
    def resolved_tracking_uri(self) -> str:
        return self.tracking_uri or f"sqlite:///{self.mlruns_dir / 'mlflow.db'}"
