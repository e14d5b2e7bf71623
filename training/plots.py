"""Figures logged with every run, so reviewers see what the metrics summarise."""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure  # no pyplot: no global state, no display, nothing to close

from features.engineering import PERIOD, UNITS
from training.forecaster import FORECAST


def recall_curve_figure(ks: list[int], curves: dict[str, list[float]], protocol: str):
    figure = Figure(figsize=(6, 4))
    axis = figure.subplots()
    for name, values in curves.items():
        axis.plot(ks, values, marker="o", markersize=3, label=name)
    axis.set(xlabel="k", ylabel="Recall@k", title=f"Recall@k on the {protocol} holdout")
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    return figure


def forecast_figure(history: pd.DataFrame, holdout: pd.DataFrame, baseline: pd.DataFrame):
    """Total units per period: history, actual holdout, forecast with its P10-P90 band (summed
    over series, so wider than any one series' band) and the seasonal naive baseline."""
    figure = Figure(figsize=(8, 4))
    axis = figure.subplots()
    axis.plot(history.groupby(PERIOD)[UNITS].sum(), color="grey", label="history")
    totals = holdout.groupby(PERIOD)[[UNITS, FORECAST, "p10", "p90"]].sum()
    axis.plot(totals[UNITS], color="black", marker="o", label="actual")
    axis.plot(totals[FORECAST], color="tab:blue", marker="o", label="forecast")
    axis.fill_between(
        totals.index,
        totals["p10"],
        totals["p90"],
        color="tab:blue",
        alpha=0.15,
        label="sum of P10 .. sum of P90",
    )
    axis.plot(
        baseline.groupby(PERIOD)[FORECAST].sum(),
        color="tab:orange",
        ls="--",
        label="seasonal naive",
    )
    axis.set(ylabel="units, all series", title="Forecast vs actual on the last backtest window")
    axis.grid(alpha=0.3)
    axis.legend()
    figure.autofmt_xdate()
    figure.tight_layout()
    return figure


def trade_off_figure(trade_off: pd.DataFrame):
    """Stockout rate against average stock: the omnishelf policy at each service level and the
    moving-average baseline at the cover that matches its stock."""
    figure = Figure(figsize=(6, 4))
    axis = figure.subplots()
    for policy, points in trade_off.groupby("policy"):
        points = points.sort_values("avg_on_hand")
        axis.plot(points["avg_on_hand"], points["stockout_rate"], marker="o", label=policy)
        if policy == "omnishelf":
            for _, point in points.iterrows():
                axis.annotate(
                    f"{point['service_level']:.0%}",
                    (point["avg_on_hand"], point["stockout_rate"]),
                    textcoords="offset points",
                    xytext=(4, 4),
                    fontsize=8,
                )
    axis.set(
        xlabel="average units on hand per series",
        ylabel="share of series-days with a stockout",
        title="Stock vs stockouts in the restock replay",
    )
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    return figure


def importance_figure(importance: pd.Series, title: str = "Forecaster feature importance"):
    figure = Figure(figsize=(6, 4))
    axis = figure.subplots()
    importance.head(15)[::-1].plot.barh(ax=axis)
    axis.set(xlabel="gain", title=title)
    figure.tight_layout()
    return figure
