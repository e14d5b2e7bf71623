"""The `omnishelf` command line."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from features.contract import DataContractError
from features.errors import UserInputError
from features.redaction import scrub
from features.settings import Settings

console = Console()
app = typer.Typer(
    help="omnishelf: next-best-product, demand forecasts and restock orders, omnichannel.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
load_app = typer.Typer(help="Load a built-in dataset into the workspace.", no_args_is_help=True)
features_app = typer.Typer(
    help="Build, register and materialise features (Feast).", no_args_is_help=True
)
customers_app = typer.Typer(
    help="One ID and data rights: merge/split identities, opt out, forget.",
    no_args_is_help=True,
)
app.add_typer(load_app, name="load")
app.add_typer(features_app, name="features")
evaluate_app = typer.Typer(
    help="Score a model and its baselines on holdouts of the workspace's dataset.",
    no_args_is_help=True,
)
app.add_typer(customers_app, name="customers")
app.add_typer(evaluate_app, name="evaluate")
runs_app = typer.Typer(help="Review MLflow runs.", no_args_is_help=True)
models_app = typer.Typer(help="The model registry: champion and challenger.", no_args_is_help=True)
app.add_typer(runs_app, name="runs")
app.add_typer(models_app, name="models")

# Headline figures of the demo (demo.json): the models' against their best baselines.
DEMO_FIGURES = (
    "holdout_recall_at_10",
    "holdout_best_baseline_recall_at_10",
    "holdout_wrmsse",
    "holdout_wrmsse_best_stat",
    "holdout_p90_coverage",
    "stockout_rate_ratio",
)
ForceOption = Annotated[bool, typer.Option("--force", help="rebuild even if up to date")]
# What the user can fix: a file, a column, a setting, a missing model. Anything else is a bug.
USER_ERRORS = (UserInputError, DataContractError, FileNotFoundError, LookupError)
# LookupErrors too, but raised by a dict or a list the code got wrong, not by the user's input.
BUG_LOOKUPS = (KeyError, IndexError)
ERROR_LOG = "omnishelf.log"


def main() -> None:
    """Entry point: user errors end with one clear line and exit code 2; any other exception is
    a bug: exit code 1, one line pointing at the log file, which holds the traceback."""
    try:
        app()
    except USER_ERRORS as error:
        if isinstance(error, BUG_LOOKUPS):
            _internal_error(error)
        console.print(f"[bold red]error:[/] {scrub(str(error))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except Exception as error:
        _internal_error(error)


def _internal_error(error: Exception) -> None:
    """A bug: one line pointing at the log, which gets the traceback; exit code 1."""
    path = log_internal_error(error)
    console.print(
        f"[bold red]internal error[/] ({type(error).__name__}): a bug in omnishelf, not in "
        f"your input; the traceback is in {path}",
        highlight=False,
        soft_wrap=True,
    )
    sys.exit(1)


def log_internal_error(error: Exception) -> Path:
    """Append the command and the traceback (credentials scrubbed) to data/omnishelf.log, or to
    the temporary folder when the workspace cannot be written; the file's path."""
    try:
        path = Settings().data_dir / ERROR_LOG
        path.parent.mkdir(parents=True, exist_ok=True)
    except Exception:  # the settings themselves may be what is broken
        path = Path(tempfile.gettempdir()) / f"omnishelf-{ERROR_LOG}"
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    trace = "".join(traceback.format_exception(error))
    with path.open("a") as log_file:
        log_file.write(scrub(f"{stamp} omnishelf {' '.join(sys.argv[1:])}\n{trace}\n"))
    return path


def _settings(tracked: bool = True) -> Settings:
    """Settings from the environment; `tracked` commands also point MLflow at its store."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # Models are pickled on purpose (our own classes) and take frames, not signatures: MLflow's
    # warnings about both would repeat on every registration.
    logging.getLogger("mlflow.pyfunc").setLevel(logging.ERROR)
    try:
        settings = Settings()
    except ValidationError as error:
        wrong = "; ".join(
            f"OMNISHELF_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in error.errors()
        )
        raise UserInputError(f"invalid setting {wrong}") from None
    if tracked:
        from training import tracking

        tracking.configure(
            settings.resolved_tracking_uri, settings.experiment, settings.mlruns_dir / "artifacts"
        )
    return settings


@contextmanager
def _step(title: str):
    with console.status(f"[bold]{title}[/] ..."):
        began = time.perf_counter()
        yield
    console.print(f"[green]done[/] {title} ({time.perf_counter() - began:.1f} s)")


def _summary(results) -> None:
    table = Table(title="omnishelf run")
    for column in ("step", "status", "seconds", "figures"):
        table.add_column(column)
    for result in results:
        figures = ", ".join(f"{k}={v}" for k, v in result.figures.items())
        table.add_row(result.step, result.status, f"{result.seconds:.1f}", figures)
    console.print(table)


def _synthetic_source(config=None):
    """The generator's tables, named by their config so equal configs reuse stored tables."""
    from features import synthetic
    from pipelines.steps import Source

    config = config or synthetic.SyntheticConfig()
    name = (
        f"synthetic-s{config.seed}-c{config.n_customers}-st{config.n_stores}"
        f"-p{config.n_products}-d{config.days}"
    )
    return Source(name, lambda: synthetic.generate(config), synthetic.FREQ, config.country)


@load_app.command("complete-journey")
def load_complete_journey(force: ForceOption = False) -> None:
    """The 84.51 Complete Journey (1.47M lines, 2,469 households, 457 stores), weekly series."""
    from pipelines import steps

    settings = _settings()
    with _step("loading Complete Journey"):
        result = steps.ingest(settings, steps.complete_journey_source(), force)
    _summary([result])


@load_app.command("synthetic")
def load_synthetic(
    seed: int = 7,
    customers: int = 1500,
    stores: int = 8,
    products: int = 300,
    days: int = 364,
    force: ForceOption = False,
) -> None:
    """The seeded omnichannel generator (channels, identities, stock-outs, true demand), daily."""
    from features.synthetic import SyntheticConfig
    from pipelines.steps import ingest

    settings = _settings()
    config = SyntheticConfig(
        n_customers=customers, n_stores=stores, n_products=products, days=days, seed=seed
    )
    with _step("generating synthetic data"):
        result = ingest(settings, _synthetic_source(config), force)
    _summary([result])


@app.command("import")
def import_files(
    mapping: Annotated[Path, typer.Argument(help="TOML file mapping your files and columns")],
) -> None:
    """Bring your own CSV/parquet files in, validated against the data contract."""
    from features.dataset import save_tables
    from features.identity import IdentityLedger, without_forgotten
    from features.importer import import_tables

    settings = _settings(tracked=False)
    with _step(f"importing {mapping}"):
        tables, options = import_tables(mapping, settings.identity_salt)
        ledger = IdentityLedger(settings.identity_dir)
        tables = without_forgotten(tables, ledger.forgotten())
        info = save_tables(
            tables, settings.tables_dir, options["name"], options["freq"], options["country"]
        )
    table = Table(title=f"imported {info.name} ({info.freq})")
    table.add_column("table")
    table.add_column("rows", justify="right")
    for name, frame in tables.items():
        table.add_row(name, f"{len(frame):,}")
    console.print(table)


@features_app.command("apply")
def features_apply() -> None:
    """Register entities, feature views and services in the Feast registry."""
    from features.feature_store import apply_definitions, open_store

    settings = _settings()
    with _step("applying Feast definitions"):
        apply_definitions(open_store(settings))


@features_app.command("list")
def features_list() -> None:
    """The feature views (meaning, window, owner, TTL), their features and the services."""
    from feast import FeatureService, FeatureView

    from features.repo.definitions import DEFINITIONS

    views = Table(title="feature views")
    features = Table(title="features")
    services = Table(title="feature services (versioned by consumer)")
    for table, columns in (
        (views, ("view", "entities", "window", "ttl", "owner", "meaning")),
        (features, ("view", "feature", "meaning")),
        (services, ("service", "views", "meaning")),
    ):
        for column in columns:
            table.add_column(column)
    for definition in DEFINITIONS:
        if isinstance(definition, FeatureView):
            ttl = definition.ttl.total_seconds()
            views.add_row(
                definition.name,
                ", ".join(definition.entities),
                definition.tags.get("window", ""),
                f"{ttl / 86400:g} d" if ttl else "never",
                definition.owner,
                definition.description,
            )
            for field in definition.features:
                features.add_row(definition.name, field.name, field.description)
        elif isinstance(definition, FeatureService):
            services.add_row(
                definition.name,
                ", ".join(p.name for p in definition.feature_view_projections),
                definition.description,
            )
    for table in (views, features, services):
        console.print(table)


@features_app.command("materialize")
def features_materialize(force: ForceOption = False) -> None:
    """Compute feature tables and load what is new into the online store (incremental)."""
    from pipelines.steps import build_features

    settings = _settings()
    with _step("building and materialising features"):
        result, summaries = build_features(settings, force)
    table = Table(title="materialisation")
    for column in ("view", "rows", "entities", "seconds"):
        table.add_column(column)
    for s in summaries:
        table.add_row(s.view, f"{s.rows:,}", f"{s.entities:,}", f"{s.seconds:.1f}")
    console.print(table)


def _decide(title: str, decision) -> None:
    """Run one decision of `pipelines.customers` (called with it and the settings) and show
    what it changed."""
    from pipelines import customers

    settings = _settings(tracked=False)
    with _step(title):
        update = decision(customers, settings)
    table = Table(title=f"customers {update.action}")
    for column in ("customers changed", "identities changed", "seconds"):
        table.add_column(column, justify="right")
    table.add_row(
        str(update.customers_changed), str(update.identities_changed), f"{update.seconds:.1f}"
    )
    console.print(table)


IdentityArgument = Annotated[str, typer.Argument(help="channel:channel_customer_id")]
ReasonOption = Annotated[str, typer.Option(help="why, kept in the audit trail")]
CustomerArgument = Annotated[int, typer.Argument(help="resolved customer id", min=0)]


@customers_app.command("merge")
def customers_merge(
    identity: IdentityArgument, other: IdentityArgument, reason: ReasonOption = "manual"
) -> None:
    """Declare two identities the same person; online features follow at once."""
    _decide(f"merging {identity} and {other}", lambda c, s: c.merge(s, identity, other, reason))


@customers_app.command("split")
def customers_split(identity: IdentityArgument, reason: ReasonOption = "manual") -> None:
    """Detach an identity from the matches and merges made before now (un-merge)."""
    _decide(f"splitting {identity}", lambda c, s: c.split(s, identity, reason))


@customers_app.command("opt-out")
def customers_opt_out(customer_id: CustomerArgument) -> None:
    """Stop personalising for the customer, from the next request on."""
    _decide(f"opting out customer {customer_id}", lambda c, s: c.set_opt_out(s, customer_id, True))


@customers_app.command("opt-in")
def customers_opt_in(customer_id: CustomerArgument) -> None:
    """Personalise again for a customer who opted out."""
    _decide(f"opting in customer {customer_id}", lambda c, s: c.set_opt_out(s, customer_id, False))


@customers_app.command("forget")
def customers_forget(customer_id: CustomerArgument) -> None:
    """Erase the customer from the online store and the data; later loads and training runs
    leave them out, and the next recommender is trained without their history."""
    from features.model_removals import WHEN, queue_path

    _decide(f"forgetting customer {customer_id}", lambda c, s: c.forget(s, customer_id))
    console.print(
        f"customer {customer_id} is still inside the registered recommender: they are removed "
        f"from the next model, {WHEN} (queued in {queue_path(Settings().identity_dir)})"
    )


@customers_app.command("show")
def customers_show(customer_id: CustomerArgument) -> None:
    """The customer's identities, why each belongs to them, and the decisions that touched them."""
    from pipelines import customers

    settings = _settings(tracked=False)
    identities, rules = customers.audit(settings, customer_id)
    _print_frame(f"identities of customer {customer_id}", identities)
    _print_frame("decisions", rules)


def _print_frame(title: str, frame) -> None:
    table = Table(title=title)
    for column in frame.columns:
        table.add_column(str(column))
    for row in frame.astype(str).itertuples(index=False):
        table.add_row(*row)
    console.print(table)


@app.command()
def train(
    model: Annotated[str, typer.Argument(help="recommender, forecaster or all")] = "all",
    force: ForceOption = False,
) -> None:
    """Train, evaluate on a time holdout, log to MLflow and register as champion."""
    from pipelines import steps

    if model not in ("recommender", "forecaster", "all"):
        raise typer.BadParameter("choose recommender, forecaster or all", param_hint="MODEL")
    settings = _settings()
    results = []
    if model in ("recommender", "all"):
        with _step("training the recommender"):
            results.append(steps.train_recommender(settings, force))
    if model in ("forecaster", "all"):
        with _step("training the forecaster"):
            results.append(steps.train_forecaster(settings, force))
    _summary(results)


@evaluate_app.command("recommender")
def evaluate_recommender(
    protocol: Annotated[str, typer.Option(help="time_split, next_basket or both")] = "both",
    output: Annotated[Path | None, typer.Option(help="also write the tables as JSON here")] = None,
) -> None:
    """The recommender and every baseline on the time split and the next-basket holdout of the
    dataset in the workspace (`omnishelf import` or `omnishelf load`), logged to MLflow."""
    from pipelines import steps
    from training.recommender import TABLE_METRICS

    protocols = ["time_split", "next_basket"] if protocol == "both" else [protocol]
    if not set(protocols) <= {"time_split", "next_basket"}:
        raise typer.BadParameter("choose time_split, next_basket or both", param_hint="--protocol")
    settings = _settings()
    with _step("building features"):
        steps.build_features(settings)
    evaluations = steps.evaluate_recommender(settings, protocols)
    for evaluation in evaluations:
        shown = evaluation.table[list(TABLE_METRICS)].round(4)
        _print_frame(
            f"{evaluation.protocol}: {len(evaluation.holdout.customers):,} customers, "
            f"{evaluation.holdout.catalogue:,} products",
            shown.reset_index(names="model"),
        )
        _print_frame(f"{evaluation.protocol}: by segment", evaluation.segments.round(4))
        if evaluation.reminder_scores:
            console.print({k: round(v, 4) for k, v in evaluation.reminder_scores.items()})
    if output is not None:
        steps.write_results(
            output,
            {
                e.protocol: e.table.reset_index(names="model").to_dict("records")
                for e in evaluations
            },
        )


@app.command()
def backtest(
    origins: Annotated[int, typer.Option(min=1, max=12, help="rolling origins")] = 3,
    output: Annotated[Path | None, typer.Option(help="also write the tables as JSON here")] = None,
) -> None:
    """Forecast accuracy of the forecaster and every baseline on rolling origins, then the
    restock replay (stockouts, fill rate, stock, turns) against a moving-average policy at
    matched stock, on the dataset in the workspace; logged to MLflow."""
    from pipelines import steps

    settings = _settings()
    with _step("building features"):
        steps.build_features(settings)
    with console.status("[bold]backtest[/] ...") as status:
        result, simulation, trade_off = steps.run_backtest(
            settings, origins, progress=lambda text: status.update(f"[bold]backtest[/] {text}")
        )
    _print_frame(
        f"forecast accuracy, {origins} origin(s), mean over origins",
        result.table.round(4).reset_index(),
    )
    _print_frame(
        f"restock replay at service level {steps.SERVICE_LEVEL:.0%} vs the moving-average "
        "policy at matched stock",
        simulation.round(4).reset_index(),
    )
    _print_frame("stock vs stockouts by service level", trade_off.round(4))
    if output is not None:
        steps.write_results(
            output,
            {
                "backtest": result.table.reset_index().to_dict("records"),
                "simulation": simulation.reset_index().to_dict("records"),
                "trade_off": trade_off.to_dict("records"),
            },
        )


@app.command()
def restock(
    as_of: Annotated[
        str | None,
        typer.Option(
            help="last day of data to forecast from, YYYY-MM-DD; orders are for the morning "
            "after. Default: the newest materialised day"
        ),
    ] = None,
    service_level: Annotated[
        float, typer.Option(help="chance of no stockout before the next delivery, (0.5, 0.999]")
    ] = 0.95,
    stock: Annotated[
        Path | None,
        typer.Option(help="CSV/parquet of store_id, product_id, on_hand[, on_order]"),
    ] = None,
    output: Annotated[Path | None, typer.Option(help="order file; default data/orders/")] = None,
) -> None:
    """Order quantities for every active store x product: forecast, order-up-to level at the
    service level over lead time + a 7-day review, rounded to packs and minimum orders."""
    import pandas as pd

    from pipelines import steps

    if not 0.5 < service_level <= 0.999:
        raise typer.BadParameter(
            f"{service_level} is outside (0.5, 0.999]", param_hint="--service-level"
        )
    settings = _settings()
    try:
        day = pd.Timestamp(as_of).date() if as_of is not None else None
    except ValueError as error:
        raise typer.BadParameter(
            f"{as_of!r} is not a date (YYYY-MM-DD)", param_hint="--as-of"
        ) from error
    with _step("planning orders"):
        orders, day = steps.restock_orders(settings, day, service_level, stock)
    path = output or settings.data_dir / "orders" / f"orders_{day:%Y-%m-%d}.csv"
    if path.is_dir():
        raise typer.BadParameter(f"{path} is a folder; name the order file", param_hint="--output")
    steps.write_orders(orders, path)
    ordering = orders[orders["order_quantity"] > 0]
    by_store = (
        ordering.groupby("store_id")
        .agg(lines=("product_id", "size"), units=("order_quantity", "sum"))
        .sort_values("units", ascending=False)
        .head(10)
        .reset_index()
    )
    _print_frame("top stores by units ordered", by_store)
    summary = {
        "series": len(orders),
        "order lines": len(ordering),
        "units ordered": int(ordering["order_quantity"].sum()),
        "stock unknown (taken as 0)": int((~orders["stock_known"]).sum()),
        "file": str(path),
    }
    _print_frame(f"restock {day:%Y-%m-%d}", pd.DataFrame([summary]))


@app.command()
def sweep(
    model: Annotated[str, typer.Argument(help="recommender or forecaster")],
    trials: Annotated[int, typer.Option(min=1, max=10_000, help="trials this worker runs")] = 20,
    timeout: Annotated[float | None, typer.Option(min=1, help="stop after S seconds")] = None,
    study: Annotated[str | None, typer.Option(help="study name; default from the data")] = None,
    seed: Annotated[int, typer.Option(help="TPE seed of the study's first worker")] = 0,
    threads: Annotated[int, typer.Option(min=1, max=64, help="LightGBM threads per trial")] = 2,
) -> None:
    """Optuna sweep: TPE with median pruning, every trial a nested MLflow run, the best refit and
    registered as `challenger`. Start it on several processes or machines with the same
    OMNISHELF_OPTUNA_STORAGE (PostgreSQL) to share one study."""
    import pandas as pd

    from pipelines import steps, sweeps

    if model not in ("recommender", "forecaster"):
        raise typer.BadParameter("recommender or forecaster", param_hint="MODEL")
    settings = _settings()
    steps.require_current_features(settings)
    with console.status(f"[bold]sweep {model}[/] preparing ...") as status:
        result = sweeps.sweep(
            settings,
            model,
            trials,
            timeout,
            study,
            seed,
            threads,
            progress=lambda text: status.update(f"[bold]sweep {model}[/] {text}"),
        )
    best_first = result.study.direction.name == "MINIMIZE"
    trials_table = sweeps.trial_table(result.study).sort_values("score", ascending=best_first)
    _print_frame(f"study {result.study.study_name}: best trials", trials_table.head(10).round(4))
    summary = {
        "trials in study": len(result.study.trials),
        f"default {result.score_name}": "-"
        if result.default_score is None
        else round(result.default_score, 4),
        f"best {result.score_name}": round(result.best_score, 4),
        f"best: {result.holdout_metric} on the holdout": round(result.holdout_score, 4),
        "challenger": f"v{result.registered}" if result.registered else "already registered",
        "seconds": round(result.seconds, 1),
    }
    _print_frame("sweep", pd.DataFrame([summary]))
    console.print(
        f"promote it with: omnishelf models promote {steps.registered_name(settings, model)}"
    )


@app.command()
def report(
    date: Annotated[
        str | None, typer.Option(help="report day, YYYY-MM-DD; default the last")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="folder; default data/reports/DAY")] = None,
    check: Annotated[
        bool, typer.Option("--check", help="exit with code 1 when an alert rule is breached")
    ] = False,
) -> None:
    """KPI report: a self-contained HTML page with stock, customer and model figures, the same
    numbers as CSV/JSON, alert rules (OMNISHELF_ALERTS) checked and the page logged to MLflow."""
    import pandas as pd

    from pipelines import report as reporting
    from pipelines import steps

    settings = _settings()
    steps.require_current_features(settings)
    try:
        day = pd.Timestamp(date) if date is not None else None
    except ValueError as error:
        raise typer.BadParameter(f"{date!r} is not a date (YYYY-MM-DD)", param_hint="--date") from (
            error
        )
    with console.status("[bold]report[/] computing ..."):
        built = reporting.build_report(settings, day)
        folder = out or settings.data_dir / "reports" / f"{built.day:%Y-%m-%d}"
        files = reporting.write_report(built, folder)
        run_id = reporting.log_report(built, folder)
    summary = {k: round(v, 4) if isinstance(v, float) else v for k, v in built.summary().items()}
    _print_frame("report", pd.DataFrame([summary]))
    if not built.alerts.empty:
        _print_frame("alerts", built.alerts.round(4))
    console.print(f"page: {files['html']}\nMLflow run: {run_id}")
    if check and not built.alerts.empty:
        raise typer.Exit(1)


@runs_app.command("compare")
def runs_compare(
    run_a: Annotated[str, typer.Argument(help="MLflow run id")],
    run_b: Annotated[str, typer.Argument(help="MLflow run id")],
) -> None:
    """The metrics of two runs side by side with B - A, and the parameters that differ."""
    from pipelines import sweeps

    _settings()
    table = sweeps.compare_runs(run_a, run_b)
    shown = table.map(lambda v: round(v, 4) if isinstance(v, float) else v)
    _print_frame(f"A = {run_a}, B = {run_b}", shown)


@models_app.command("sign")
def models_sign(
    name: Annotated[str, typer.Argument(help="registered model, e.g. omnishelf-forecaster")],
) -> None:
    """Record the hash of the champion's artifacts as they are now, so the service loads it: for
    a version registered before hashes were recorded, once you trust it."""
    from training import tracking

    _settings()
    version, digest = tracking.sign_champion(name)
    console.print(f"{name} v{version}: signed, {tracking.HASH_TAG} {digest}")


@models_app.command("promote")
def models_promote(
    name: Annotated[str, typer.Argument(help="registered model, e.g. omnishelf-forecaster")],
    reason: Annotated[str, typer.Option(help="why, recorded on the version")] = "sweep winner",
    force: Annotated[
        bool, typer.Option("--force", help="promote even if the gate refuses")
    ] = False,
) -> None:
    """Move `champion` to the challenger if it beats the champion on the same holdout."""
    from pipelines import sweeps

    _settings()
    outcome = sweeps.promote(name, reason, force)
    if not outcome.promoted:
        raise LookupError(f"{outcome.message}; --force promotes anyway")
    console.print(f"{name}: champion -> v{outcome.version} ({outcome.message})")


# The settings that decide where the service listens and whom it lets in.
ACCESS_SETTINGS = ("host", "api_keys", "api_key")


def server_url(settings: Settings, port: int) -> str:
    """Where this machine reaches the service (all interfaces: through loopback)."""
    host = settings.host
    if host.is_unspecified:
        return f"http://127.0.0.1:{port}"
    return f"http://[{host}]:{port}" if host.version == 6 else f"http://{host}:{port}"


def start_server(
    settings: Settings, port: int, env: dict[str, str] | None = None
) -> subprocess.Popen:
    """`bentoml serve` of the service for this workspace on OMNISHELF_HOST, logging to
    data/server.log; `env` adds or overrides environment variables (settings of the service).
    UserInputError, before anything starts, when the service would refuse to (no API key off
    loopback, a short key)."""
    from serving.access import accepted_keys

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        **(env or {}),
        "OMNISHELF_HOME": str(settings.home.resolve()),
        "BENTOML_HOME": str(settings.data_dir / "bentoml"),
        "BENTOML_DO_NOT_TRACK": "true",
    }
    given = {name: env.get(f"OMNISHELF_{name.upper()}") for name in ACCESS_SETTINGS}
    served = Settings(**{name: value for name, value in given.items() if value is not None})
    accepted_keys(served)
    command = [
        sys.executable,
        "-m",
        "bentoml",
        "serve",
        "serving.service:Omnishelf",
        "--host",
        str(served.host),
        "--port",
        str(port),
    ]
    log_file = open(settings.data_dir / "server.log", "w")  # noqa: SIM115 - lives with the server
    return subprocess.Popen(command, env=env, stdout=log_file, stderr=subprocess.STDOUT)


def wait_ready(server: subprocess.Popen, url: str, log_path: Path, timeout: float = 180) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise LookupError(f"the server exited with code {server.returncode}; see {log_path}")
        try:
            response = httpx.get(f"{url}/readyz", timeout=2)
            if response.status_code == 200:
                return
            if response.status_code == 503 and "champion" in response.text:
                raise LookupError(f"server not ready: {response.text}")
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise LookupError(f"the server was not ready within {timeout:.0f} s; see {log_path}")


@app.command()
def serve(port: int = 3000) -> None:
    """Start the BentoML service on OMNISHELF_HOST, 127.0.0.1 by default (Ctrl-C stops it)."""
    settings = _settings()
    server = start_server(settings, port)
    console.print(
        f"serving on {server_url(settings, port)} (OpenAPI page: /docs); "
        f"log: {settings.data_dir / 'server.log'}"
    )
    _serve_until_interrupted(server)


def _serve_until_interrupted(server: subprocess.Popen) -> None:
    try:
        server.wait()
    except KeyboardInterrupt:
        console.print("stopping the server")
    finally:
        stop_server(server)


def stop_server(server: subprocess.Popen) -> None:
    if server.poll() is None:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()


@app.command()
def demo(
    once: Annotated[bool, typer.Option("--once", help="stop after calling each endpoint")] = False,
    dataset: Annotated[
        str, typer.Option(help="complete-journey or synthetic")
    ] = "complete-journey",
    port: int = 3000,
    started_at: Annotated[
        float | None, typer.Option(help="epoch seconds the demo began (make)")
    ] = None,
    results_file: Annotated[Path, typer.Option(help="where the demo figures go")] = Path(
        "benchmarks/results/demo.json"
    ),
    force: ForceOption = False,
) -> None:
    """Data -> features -> training -> registry -> a running service answering, in one go."""
    from pipelines import steps
    from pipelines.models import champion_title
    from training import tracking

    began = started_at or time.time()
    once = once or bool(os.environ.get("CI"))
    settings = _settings()
    results = []
    sources = {"complete-journey": steps.complete_journey_source, "synthetic": _synthetic_source}
    if dataset not in sources:
        raise typer.BadParameter("choose complete-journey or synthetic", param_hint="--dataset")
    source = sources[dataset]()
    with _step(f"1/5 data: {source.name}"):
        results.append(steps.ingest(settings, source, force))
    with _step("2/5 features: Feast apply + materialise"):
        results.append(steps.build_features(settings, force)[0])
    with _step("3/5 recommender: time-split evaluation against the baselines, register"):
        results.append(steps.train_recommender(settings, force))
    console.print(champion_title(tracking.champion_version(settings.recommender_name)))
    with _step("4/5 forecaster: rolling backtest, restock replay, register"):
        results.append(steps.train_forecaster(settings, force))
    console.print(champion_title(tracking.champion_version(settings.forecaster_name)))
    url = server_url(settings, port)
    with _step(f"5/5 service: bentoml serve on {url}"):
        server = start_server(settings, port)
        try:
            wait_ready(server, url, settings.data_dir / "server.log")
        except LookupError:
            stop_server(server)
            raise
    try:
        _call_endpoints(settings, url)
        wall = time.time() - began
        _summary(results)
        figures = {"demo_wall_s": round(wall, 1)}
        for result in results:
            figures.update({k: v for k, v in result.figures.items() if k in DEMO_FIGURES})
        # Only a run that built something measures the full path; a rerun would report reuse.
        if dataset == "complete-journey" and any(r.status != "reused" for r in results):
            steps.write_results(results_file, figures)
        console.print(json.dumps(figures))
        console.print(
            f"\nOpenAPI page: {url}/docs\nMLflow UI:    .venv/bin/mlflow ui --backend-store-uri "
            f"{scrub(settings.resolved_tracking_uri)} --port 5000  (then http://127.0.0.1:5000)"
        )
        if not once:
            console.print("serving until Ctrl-C ...")
            _serve_until_interrupted(server)
    finally:
        stop_server(server)


def _call_endpoints(settings: Settings, url: str) -> None:
    """One call to each endpoint with ids taken from the data, answers printed."""
    import httpx
    import pandas as pd

    from features.repo.definitions import FEATURE_TABLES
    from serving.access import accepted_keys
    from serving.guard import API_KEY_HEADER

    demand = pd.read_parquet(
        settings.feast_dir / FEATURE_TABLES["store_product_demand"],
        columns=["store_id", "product_id", "units_mean_91d"],
    )
    busiest = (
        demand.groupby(["store_id", "product_id"])["units_mean_91d"]
        .max()
        .sort_values(ascending=False)
    )
    store_id = int(busiest.index[0][0])
    products = [int(p) for s, p in busiest.index if s == store_id][:3]
    customers = pd.read_parquet(settings.tables_dir / "customers.parquet", columns=["customer_id"])
    calls = [
        ("/recommend", {"customer_id": int(customers["customer_id"].iloc[0]), "k": 5}),
        ("/recommend", {"customer_id": 987654321, "k": 5, "store_id": store_id}),
        ("/forecast", {"store_id": store_id, "product_ids": products, "horizon_days": 14}),
        (
            "/restock",
            {
                "store_id": store_id,
                "product_ids": products,
                "on_hand": [3, 0, 10],
                "lead_time_days": 2,
                "service_level": 0.95,
            },
        ),
    ]
    keys = accepted_keys(settings)  # the demo calls as a client would, with a key when needed
    headers = {API_KEY_HEADER: keys[0].decode()} if keys else {}
    with httpx.Client(base_url=url, timeout=30, headers=headers) as client:
        for route, body in calls:
            response = client.post(route, json=body)
            # The status in the rule, the request under it: a long body would cut the rule's
            # title before the status.
            console.rule(f"POST {route} -> {response.status_code}")
            console.print(f"request: {json.dumps(body)}", markup=False, highlight=False)
            console.print_json(response.text)
        for route in ("/healthz", "/readyz"):
            console.rule(f"GET {route} -> {client.get(route).status_code}")


if __name__ == "__main__":
    main()
