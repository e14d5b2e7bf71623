"""Series are chosen on their sales before a moment, never on the weeks they are scored on."""

import pandas as pd

from features.engineering import demand_panel
from features.series_selection import active_before

WEEKS = pd.date_range("2024-01-01", periods=12, freq="7D")  # Mondays
ORIGIN = WEEKS[8]
SELLING_WEEKS = {
    1: range(0, 5),  # fades: 5 of the 8 weeks before the origin, 5 of 12 overall
    2: range(8, 12),  # starts at the origin
    3: range(0, 12),  # steady
    4: [3, 5, 7, 8, 9, 10, 11],  # 3 of 8 weeks before the origin, 7 of 12 overall
}


def weekly_tables() -> dict[str, pd.DataFrame]:
    """One sale on the Monday and one on the Sunday of each selling week of each product."""
    rows = [
        (product, week + pd.Timedelta(days=day))
        for product, weeks in SELLING_WEEKS.items()
        for week in WEEKS[list(weeks)]
        for day in (0, 6)
    ]
    sales = pd.DataFrame(rows, columns=["product_id", "ts"]).assign(
        store_id=1, quantity=1.0, net_sales=2.0
    )
    products = pd.DataFrame({"product_id": list(SELLING_WEEKS), "sold_in_units": True})
    return {"transactions": sales, "products": products}


def chosen(panel: pd.DataFrame) -> list[int]:
    return sorted(panel["product_id"].unique().tolist())


def test_series_are_chosen_on_sales_before_the_origin_so_the_window_cannot_leak():
    tables = weekly_tables()
    # On the whole grid, the fading series is dropped and the late starter taken in.
    assert chosen(demand_panel(tables, "W")) == [3, 4]
    panel = demand_panel(tables, "W", selected_before=ORIGIN)
    assert chosen(panel) == [1, 3]
    fading = panel[panel["product_id"] == 1]
    assert len(fading) == len(WEEKS)  # the whole series, its silent weeks after the origin too
    assert fading.loc[fading["period"] >= ORIGIN, "units"].eq(0).all()
    # Several moments (a backtest's origins): the series chosen before any of them.
    assert chosen(demand_panel(tables, "W", selected_before=[ORIGIN, WEEKS[11]])) == [1, 3, 4]


def test_active_before_keeps_whole_series_chosen_on_earlier_periods_without_leak():
    panel = demand_panel(weekly_tables(), "W", min_active_share=0.0)
    kept = active_before(panel, ORIGIN)
    assert chosen(kept) == [1, 3]
    assert len(kept) == 2 * len(WEEKS)
    assert chosen(active_before(panel, WEEKS[11])) == [3, 4]
