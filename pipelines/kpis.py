"""The numbers of the KPI report, as pure functions of the tables, and the alert rules on them.

Every figure covers a window of `WINDOW_DAYS` days ending on the report day. Stock figures come
from the inventory snapshots where the dataset has them (observed) and from the restock replay of
the champion forecaster's last backtest otherwise (simulated); both are summed per series first
(`training.inventory.kpis`), so a store's figure and the whole chain's are computed alike.
"""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.contract import (
    CHANNEL,
    CUSTOMER_ID,
    DATE,
    NET_SALES,
    ORDER_ID,
    PRODUCT_ID,
    QUANTITY,
    STORE_ID,
    TS,
)
from features.engineering import sold_out_days
from features.errors import UserInputError
from training.inventory import DAYS_PER_YEAR, kpis

WINDOW_DAYS = 28
STOCK_COLUMNS = ("stockout_rate", "fill_rate", "days_of_cover", "inventory_turns", "lost_units")


def window(day: pd.Timestamp) -> tuple[pd.Timestamp, pd.Timestamp]:
    """First day and the day after the last of the window ending on `day`."""
    return day - pd.Timedelta(days=WINDOW_DAYS - 1), day + pd.Timedelta(days=1)


def observed_series(
    inventory: pd.DataFrame, transactions: pd.DataFrame, day: pd.Timestamp
) -> pd.DataFrame:
    """Per store x product over the window, from start-of-day stock snapshots: a sold-out day
    (`features.engineering.sold_out_days`) is a stockout. Units lost that day are estimated as
    the series' mean sales on its in-stock days of the window minus what it sold, at least 0;
    sales themselves are never more than demand."""
    first, end = window(day)
    stock = inventory[(inventory[DATE] >= first) & (inventory[DATE] < end)]
    if stock.empty:
        raise UserInputError(f"no inventory snapshot between {first:%Y-%m-%d} and {day:%Y-%m-%d}")
    # Only the window's sales: the stock days are the window's.
    sold = transactions[(transactions[TS] >= first) & (transactions[TS] < end)]
    days = sold_out_days(stock, sold)
    in_stock_sales = days["sold"].where(~days["sold_out"])
    usual = in_stock_sales.groupby([days[STORE_ID], days[PRODUCT_ID]]).transform("mean")
    days["lost"] = np.where(
        days["sold_out"], np.maximum(usual.fillna(0.0) - days["sold"], 0.0), 0.0
    )
    grouped = days.groupby([STORE_ID, PRODUCT_ID])
    return pd.DataFrame(
        {
            "stockout_days": grouped["sold_out"].sum(),
            "days": grouped.size(),
            "sold": grouped["sold"].sum(),
            "lost": grouped["lost"].sum(),
            "avg_on_hand": grouped["on_hand"].mean(),
        }
    ).reset_index()


def stock_table(per_series: pd.DataFrame, by: str | None) -> pd.DataFrame:
    """Stock KPIs of series grouped by a column (`None`: all series in one row)."""
    groups = per_series.groupby(by, sort=True) if by else [("all", per_series)]
    rows = []
    for key, group in groups:
        figures = kpis(group)
        turns = figures["inventory_turns"]
        rows.append(
            {
                by or "scope": key,
                "series": len(group),
                **{name: figures[name] for name in ("stockout_rate", "fill_rate")},
                # Days of stock at the window's average level and sales rate.
                "days_of_cover": DAYS_PER_YEAR / turns if turns > 0 else np.nan,
                "inventory_turns": turns,
                "lost_units": figures["lost_units"],
            }
        )
    return pd.DataFrame(rows)


@dataclass
class CustomerKpis:
    active_customers: int
    repurchase_rate: float  # of the previous window's customers, the share who bought again
    cross_channel_share: float  # of the active customers, the share who used >= 2 channels
    channel_mix: pd.DataFrame  # channel, customers, orders, units, share of units
    churn_risk: pd.DataFrame


def customer_kpis(transactions: pd.DataFrame, day: pd.Timestamp, top: int = 20) -> CustomerKpis:
    first, end = window(day)
    sold = transactions[(transactions[QUANTITY] > 0) & (transactions[TS] < end)]
    current = sold[sold[TS] >= first]
    previous = sold[(sold[TS] >= first - pd.Timedelta(days=WINDOW_DAYS)) & (sold[TS] < first)]
    active = current[CUSTOMER_ID].unique()
    before = previous[CUSTOMER_ID].unique()
    repurchase = float(np.isin(before, active).mean()) if len(before) else np.nan
    channels = current.groupby(CUSTOMER_ID)[CHANNEL].nunique()
    mix = current.groupby(CHANNEL).agg(
        customers=(CUSTOMER_ID, "nunique"), orders=(ORDER_ID, "nunique"), units=(QUANTITY, "sum")
    )
    mix["share_of_units"] = mix["units"] / mix["units"].sum()
    return CustomerKpis(
        active_customers=len(active),
        repurchase_rate=repurchase,
        cross_channel_share=float((channels >= 2).mean()) if len(channels) else np.nan,
        channel_mix=mix.reset_index(),
        churn_risk=churn_risk(sold, day, top),
    )


def churn_risk(sold: pd.DataFrame, day: pd.Timestamp, top: int) -> pd.DataFrame:
    """Regular customers (>= 3 shopping days) overdue by more than twice their usual gap between
    shopping days and at least two weeks, most overdue first, with the reason in words."""
    visits = sold.assign(_day=sold[TS].dt.normalize()).groupby([CUSTOMER_ID, "_day"])
    baskets = visits[NET_SALES].sum().reset_index()
    gaps = baskets.groupby(CUSTOMER_ID)["_day"].diff().dt.days
    per = (
        baskets.assign(gap=gaps)
        .groupby(CUSTOMER_ID)
        .agg(
            shopping_days=("_day", "size"),
            last_visit=("_day", "max"),
            usual_gap_days=("gap", "median"),
            spent=(NET_SALES, "sum"),
        )
    )
    per["days_since"] = (day.normalize() - per["last_visit"]).dt.days
    per["overdue"] = per["days_since"] / per["usual_gap_days"]
    risky = per[
        (per["shopping_days"] >= 3) & (per["overdue"] > 2.0) & (per["days_since"] >= 14)
    ].sort_values(["overdue", "spent"], ascending=False)
    risky = risky.head(top).reset_index()
    risky["reason"] = [
        f"last visit {d} days ago, usually every {g:.0f} days ({n} visits, {s:,.0f} spent)"
        for d, g, n, s in zip(
            risky["days_since"],
            risky["usual_gap_days"],
            risky["shopping_days"],
            risky["spent"],
            strict=True,
        )
    ]
    return risky[[CUSTOMER_ID, "days_since", "usual_gap_days", "overdue", "spent", "reason"]]


# ---- alerts -----------------------------------------------------------------------------------

OPERATORS = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le}
RULE = re.compile(r"^\s*([a-z][a-z0-9_]*)\s*(>=|<=|>|<)\s*(-?[0-9]*\.?[0-9]+)\s*$")


@dataclass(frozen=True)
class Rule:
    metric: str
    op: str
    threshold: float

    def __str__(self) -> str:
        return f"{self.metric} {self.op} {self.threshold:g}"


def parse_rules(texts: list[str], known: set[str]) -> list[Rule]:
    """Rules such as `stockout_rate > 0.20`; an error names the rule and what is allowed."""
    rules = []
    for text in texts:
        match = RULE.match(text)
        if match is None:
            raise UserInputError(
                f"alert rule {text!r} (OMNISHELF_ALERTS): write `metric op number`, "
                f"op one of {', '.join(OPERATORS)}"
            )
        metric, op, value = match.groups()
        if metric not in known:
            raise UserInputError(
                f"alert rule {text!r} (OMNISHELF_ALERTS): unknown metric {metric!r}; "
                f"known: {', '.join(sorted(known))}"
            )
        rules.append(Rule(metric, op, float(value)))
    return rules


def breaches(rules: list[Rule], values: pd.DataFrame) -> pd.DataFrame:
    """The (metric, scope, value) rows that break a rule, with the rule."""
    found = []
    for rule in rules:
        rows = values[values["metric"] == rule.metric]
        broken = rows[OPERATORS[rule.op](rows["value"].astype(float), rule.threshold)]
        found.append(broken.assign(rule=str(rule)))
    if not found:
        return pd.DataFrame(columns=["metric", "scope", "value", "rule"])
    return pd.concat(found, ignore_index=True)[["rule", "metric", "scope", "value"]]
