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
    """Total units per period: history, actual holdout, forecast and baseline."""
    figure = Figure(figsize=(8, 4))
    axis = figure.subplots()
    axis.plot(history.groupby(PERIOD)[UNITS].sum(), color="grey", label="history")
    axis.plot(holdout.groupby(PERIOD)[UNITS].sum(), color="black", marker="o", label="actual")
    axis.plot(
        holdout.groupby(PERIOD)[FORECAST].sum(), color="tab:blue", marker="o", label="forecast"
    )
    axis.plot(
        baseline.groupby(PERIOD)[FORECAST].sum(),
        color="tab:orange",
        ls="--",
        label="seasonal naive",
    )
    axis.set(ylabel="units, all series", title="Forecast vs actual on the holdout")
    axis.grid(alpha=0.3)
    axis.legend()
    figure.autofmt_xdate()
    figure.tight_layout()
    return figure


def importance_figure(importance: pd.Series, title: str = "Forecaster feature importance"):
    figure = Figure(figsize=(6, 4))
    axis = figure.subplots()
    importance.head(15)[::-1].plot.barh(ax=axis)
    axis.set(xlabel="gain", title=title)
    figure.tight_layout()
    return figure
