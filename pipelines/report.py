"""`omnishelf report`: the page a category or store manager opens, with its numbers as CSV and
JSON, alert rules checked against them, and the whole logged to MLflow.

The page is one self-contained HTML file (charts embedded as PNG), so it opens offline and can
be mailed. Alerts sit at the top; `--check` turns them into an exit code for schedulers.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import math
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from mlflow import MlflowClient

from features.contract import CATEGORY, CUSTOMER_ID, DATE, PRODUCT_ID, STORE_ID, TS
from features.dataset import load_tables, replace_directory
from features.errors import UserInputError
from features.feature_store import data_clock, open_store
from features.settings import Settings
from pipelines import kpis, steps
from training import tracking

log = logging.getLogger("omnishelf.report")
DUE_PROBABILITY = 0.5  # a reminder counts as due when at least this likely within the week


@dataclass
class Report:
    day: pd.Timestamp
    stock_source: str  # "observed" or "simulated"
    stock_by_store: pd.DataFrame
    stock_by_category: pd.DataFrame
    stock_overall: pd.DataFrame
    orders: pd.DataFrame  # restock orders of the next morning, by store
    customers: kpis.CustomerKpis
    due_customers: int
    models: pd.DataFrame  # model, version, metric, value
    freshness: pd.DataFrame  # feature_view, newest_data, age_days
    values: pd.DataFrame  # metric, scope, value: what the alert rules read
    alerts: pd.DataFrame

    def summary(self) -> dict:
        overall = self.stock_overall.iloc[0]
        return {
            "day": f"{self.day:%Y-%m-%d}",
            "stock_source": self.stock_source,
            **{
                name: float(overall[name])
                for name in ("stockout_rate", "fill_rate", "inventory_turns", "days_of_cover")
            },
            "units_to_order": int(self.orders["units"].sum()),
            "active_customers": self.customers.active_customers,
            "repurchase_rate": self.customers.repurchase_rate,
            "cross_channel_share": self.customers.cross_channel_share,
            "customers_due_reminder": self.due_customers,
            "alerts": len(self.alerts),
        }


def build_report(settings: Settings, day: pd.Timestamp | None = None) -> Report:
    rules = kpis.parse_rules(settings.alerts, ALERT_METRICS)  # a bad rule fails before any work
    tables = load_tables(settings.tables_dir, ["transactions", "products", "inventory"])
    transactions = tables["transactions"]
    last = transactions[TS].max().normalize()
    day = last if day is None else pd.Timestamp(day).normalize()
    if day > last or day < transactions[TS].min().normalize():
        raise UserInputError(
            f"--date {day:%Y-%m-%d} is outside the data ({transactions[TS].min():%Y-%m-%d} .. "
            f"{last:%Y-%m-%d})"
        )
    category = tables["products"].set_index(PRODUCT_ID)[CATEGORY]
    if "inventory" in tables and (tables["inventory"][DATE] <= day).any():
        per_series, source = (
            kpis.observed_series(tables["inventory"], transactions, day),
            "observed",
        )
    else:
        per_series, source = _simulated_series(settings), "simulated"
    per_series[CATEGORY] = category.reindex(per_series[PRODUCT_ID]).to_numpy()
    by_store = kpis.stock_table(per_series, STORE_ID)
    by_category = kpis.stock_table(per_series, CATEGORY)
    overall = kpis.stock_table(per_series, None)
    customers = kpis.customer_kpis(transactions, day)
    # On the data's last day, the forecast origin is the newest materialised day, which may end
    # before the last sale's day (a store's day can close after midnight); earlier, that day.
    orders = _orders(settings, None if day == last else day)
    due = _due_customers(settings, transactions, day)
    models = _model_metrics(settings)
    freshness = _freshness(settings, day)
    values = _alert_values(by_store, overall, models, freshness, customers)
    alerts = kpis.breaches(rules, values)
    for row in alerts.itertuples():
        log.warning("alert %s: %s is %.4g (%s)", row.rule, row.metric, row.value, row.scope)
    return Report(
        day,
        source,
        by_store,
        by_category,
        overall,
        orders,
        customers,
        due,
        models,
        freshness,
        values,
        alerts,
    )


def _simulated_series(settings: Settings) -> pd.DataFrame:
    """The champion forecaster's restock replay per series, from its training run."""
    version = tracking.champion_version(settings.forecaster_name)
    if version is None:
        raise LookupError(
            "the dataset has no inventory and no champion forecaster to simulate stock from: "
            "run `omnishelf train forecaster`"
        )
    return mlflow.load_table(steps.REPLAY_BY_SERIES, run_ids=[version.run_id])


def _orders(settings: Settings, day: pd.Timestamp | None) -> pd.DataFrame:
    """Units to order per store on the morning after the report day, by the champion forecaster
    forecasting from that day (None: the newest materialised data)."""
    orders, _ = steps.restock_orders(settings, None if day is None else day.date())
    by_store = orders.groupby(STORE_ID).agg(
        series=(PRODUCT_ID, "size"),
        order_lines=("order_quantity", lambda q: int((q > 0).sum())),
        units=("order_quantity", "sum"),
    )
    return by_store.reset_index()


def _due_customers(settings: Settings, transactions: pd.DataFrame, day: pd.Timestamp) -> int:
    """Customers with a product likely due within the reminder window (the champion's model),
    counted from the morning after the report day, as the service counts from the data clock."""
    model, _ = tracking.load_champion(settings.recommender_name)
    active = transactions.loc[transactions[TS] >= kpis.window(day)[0], CUSTOMER_ID].unique()
    due = model.due(active, n=5, today=day + pd.Timedelta(days=1))
    likely = due[(due["probability"] >= DUE_PROBABILITY) & (due["due_in_days"] <= 7)]
    return int(likely[CUSTOMER_ID].nunique())


MODEL_METRICS = {
    "recommender": {
        steps.RECOMMENDER_HOLDOUT_METRIC: "recall_at_10",
        "omnishelf_coverage_at_10": "catalogue_coverage_at_10",
    },
    "forecaster": {"holdout_wape": "wape", "holdout_p90_coverage": "p90_coverage"},
}


CUSTOMER_METRICS = ("repurchase_rate", "cross_channel_share", "active_customers")
# What an alert rule may name.
ALERT_METRICS = frozenset(
    {*kpis.STOCK_COLUMNS, *CUSTOMER_METRICS, "feature_age_days"}
    | {shown for names in MODEL_METRICS.values() for shown in names.values()}
)


def _model_metrics(settings: Settings) -> pd.DataFrame:
    """The champions' holdout figures, read from the runs that registered them."""
    client = MlflowClient()
    rows = []
    for family, names in MODEL_METRICS.items():
        version = tracking.champion_version(steps.registered_name(settings, family))
        if version is None:
            continue
        metrics = client.get_run(version.run_id).data.metrics
        for logged, shown in names.items():
            value = metrics.get(logged, math.nan)
            rows.append(
                {"model": family, "version": version.version, "metric": shown, "value": value}
            )
    return pd.DataFrame(rows, columns=["model", "version", "metric", "value"])


def _freshness(settings: Settings, day: pd.Timestamp) -> pd.DataFrame:
    """Per feature view, the end of its newest materialised data and its age: against the end
    of the report day for replayed history (`feature_clock = data`), the wall clock otherwise."""
    store = open_store(settings)
    now = (
        day + pd.Timedelta(days=1)
        if settings.feature_clock == "data"
        else pd.Timestamp(datetime.now())
    )
    rows = []
    for view in store.list_feature_views():
        newest = data_clock(store, [view.name])
        age = math.inf if newest is None else (now - pd.Timestamp(newest)).total_seconds() / 86400
        rows.append({"feature_view": view.name, "materialised_until": newest, "age_days": age})
    return pd.DataFrame(rows).sort_values("feature_view", ignore_index=True)


def _alert_values(by_store, overall, models, freshness, customers) -> pd.DataFrame:
    """Every number a rule may name, with where it was measured."""
    parts = []
    for metric in kpis.STOCK_COLUMNS:
        parts.append(
            pd.DataFrame(
                {
                    "metric": metric,
                    "scope": [f"store {s}" for s in by_store[STORE_ID]] + ["all stores"],
                    "value": [*by_store[metric], overall[metric].iloc[0]],
                }
            )
        )
    parts.append(
        pd.DataFrame(
            {
                "metric": models["metric"],
                "scope": [
                    f"{m} v{v}" for m, v in zip(models["model"], models["version"], strict=True)
                ],
                "value": models["value"],
            }
        )
    )
    parts.append(
        pd.DataFrame(
            {
                "metric": "feature_age_days",
                "scope": freshness["feature_view"],
                "value": freshness["age_days"],
            }
        )
    )
    parts.append(
        pd.DataFrame(
            {
                "metric": list(CUSTOMER_METRICS),
                "scope": "all customers",
                "value": [getattr(customers, name) for name in CUSTOMER_METRICS],
            }
        )
    )
    return pd.concat(parts, ignore_index=True)


# ---- output ----------------------------------------------------------------------------------


def write_report(report: Report, folder: Path) -> dict[str, Path]:
    """The page, the numbers as JSON and the tables as CSV, swapped into `folder` at once."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    tables = {
        "stock_by_store": report.stock_by_store,
        "stock_by_category": report.stock_by_category,
        "restock_orders_by_store": report.orders,
        "channel_mix": report.customers.channel_mix,
        "churn_risk": report.customers.churn_risk,
        "models": report.models,
        "feature_freshness": report.freshness,
        "alerts": report.alerts,
    }
    for name, table in tables.items():
        table.to_csv(staging / f"{name}.csv", index=False)
    numbers = {
        "summary": report.summary(),
        "alerts": report.alerts.to_dict(orient="records"),
        "values": report.values.to_dict(orient="records"),
    }
    (staging / "kpis.json").write_text(json.dumps(numbers, indent=2, default=_plain))
    (staging / "report.html").write_text(render(report))
    replace_directory(staging, folder)
    return {"html": folder / "report.html", "json": folder / "kpis.json"}


def _plain(value):
    if isinstance(value, float | np.floating) and not math.isfinite(value):
        return None
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def _png(figure: Figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _stock_chart(report: Report) -> Figure:
    figure = Figure(figsize=(7, 3.2))
    axis = figure.subplots()
    stores = report.stock_by_store.sort_values("stockout_rate", ascending=False).head(30)
    axis.bar(stores[STORE_ID].astype(str), stores["stockout_rate"], color="#c0504d")
    axis.set(
        ylabel="stockout rate",
        xlabel="store",
        title=f"Stockout rate by store ({report.stock_source})",
    )
    axis.tick_params(axis="x", labelrotation=90, labelsize=7)
    figure.tight_layout()
    return figure


def _channel_chart(report: Report) -> Figure:
    figure = Figure(figsize=(5, 3.2))
    axis = figure.subplots()
    mix = report.customers.channel_mix
    axis.bar(mix["channel"].astype(str), mix["share_of_units"], color="#4f81bd")
    axis.set(ylabel="share of units", title="Channel mix")
    figure.tight_layout()
    return figure


def _cover_chart(report: Report) -> Figure:
    figure = Figure(figsize=(5, 3.2))
    axis = figure.subplots()
    categories = report.stock_by_category.sort_values("days_of_cover").tail(20)
    axis.barh(categories[CATEGORY].astype(str), categories["days_of_cover"], color="#9bbb59")
    axis.set(xlabel="days of cover", title="Days of cover by category")
    axis.tick_params(axis="y", labelsize=7)
    figure.tight_layout()
    return figure


def _table(frame: pd.DataFrame, rows: int = 25) -> str:
    return frame.head(rows).to_html(index=False, float_format=lambda v: f"{v:,.3f}", na_rep="-")


def render(report: Report) -> str:
    summary = report.summary()
    if report.alerts.empty:
        alerts = '<p class="ok">No alert: every number is within its threshold.</p>'
    else:
        alerts = _table(report.alerts, rows=100)
    tiles = "".join(
        f'<div class="tile"><div class="label">{html.escape(k.replace("_", " "))}</div>'
        f'<div class="value">{_tile(v)}</div></div>'
        for k, v in summary.items()
        if k not in ("day", "stock_source")
    )
    charts = "".join(
        f'<img class="chart" alt="{alt}" src="data:image/png;base64,{_png(chart(report))}">'
        for alt, chart in (
            ("stockout rate by store", _stock_chart),
            ("channel mix", _channel_chart),
            ("days of cover by category", _cover_chart),
        )
    )
    source = (
        "observed from the inventory snapshots"
        if report.stock_source == "observed"
        else "simulated: the champion forecaster's restock policy replayed on its last backtest"
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>omnishelf report {summary["day"]}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }}
h1 {{ margin-bottom: 0.2em; }} h2 {{ border-bottom: 1px solid #ccc; padding-bottom: 0.2em; }}
#alerts {{ border: 2px solid #c0504d; background: #fdf0ef; padding: 0.5em 1em; }}
#alerts.clear {{ border-color: #9bbb59; background: #f3f8ec; }}
.tiles {{ display: flex; flex-wrap: wrap; gap: 0.6em; }}
.tile {{ border: 1px solid #ddd; padding: 0.4em 0.8em; min-width: 9em; }}
.label {{ font-size: 0.8em; color: #666; }} .value {{ font-size: 1.3em; }}
table {{ border-collapse: collapse; font-size: 0.85em; margin-bottom: 1em; }}
td, th {{ border: 1px solid #ddd; padding: 2px 6px; text-align: right; }}
.chart {{ max-width: 100%; margin: 0.3em; border: 1px solid #eee; }}
</style></head><body>
<h1>omnishelf KPI report</h1>
<p>Day {summary["day"]}; figures over the {kpis.WINDOW_DAYS} days ending that day.</p>
<section id="alerts" class="{"clear" if report.alerts.empty else "breached"}">
<h2>Alerts ({len(report.alerts)})</h2>{alerts}</section>
<section id="summary"><h2>Summary</h2><div class="tiles">{tiles}</div></section>
<section id="charts"><h2>Charts</h2>{charts}</section>
<section id="stock"><h2>Stock</h2><p>Stock figures are {source}.</p>
<h3>By store</h3>{_table(report.stock_by_store)}
<h3>By category</h3>{_table(report.stock_by_category)}
<h3>Restock orders for {report.day + pd.Timedelta(days=1):%Y-%m-%d}, by store</h3>
{_table(report.orders)}<p>Total: {summary["units_to_order"]:,.0f} units.</p></section>
<section id="customers"><h2>Customers</h2>
<p>{report.customers.active_customers:,} active customers; repurchase rate
{_tile(report.customers.repurchase_rate)}; cross-channel share
{_tile(report.customers.cross_channel_share)}; {report.due_customers:,} customers due for a
repurchase reminder this week.</p>
<h3>Channel mix</h3>{_table(report.customers.channel_mix)}
<h3>Churn risk</h3>{_table(report.customers.churn_risk)}</section>
<section id="models"><h2>Models</h2>{_table(report.models)}
<h3>Feature freshness</h3>{_table(report.freshness)}</section>
</body></html>
"""


def _tile(value) -> str:
    if isinstance(value, float):
        return "-" if not math.isfinite(value) else f"{value:,.3f}"
    return html.escape(f"{value:,}" if isinstance(value, int) else str(value))


def log_report(report: Report, folder: Path) -> str:
    """An MLflow run holding the report folder and its headline numbers."""
    with mlflow.start_run(run_name=f"report-{report.day:%Y-%m-%d}") as run:
        mlflow.set_tags({"kind": "report", "day": f"{report.day:%Y-%m-%d}"})
        numbers = {
            k: float(v)
            for k, v in report.summary().items()
            if isinstance(v, int | float) and math.isfinite(float(v))
        }
        mlflow.log_metrics(numbers)
        mlflow.log_artifacts(str(folder), "report")
    return run.info.run_id
