import numpy as np
import pandas as pd
import pytest

from training.backtest import (
    STAT_MODELS,
    backtest,
    rolling_origins,
    sales_weights,
    score_table,
    statistical_forecasts,
)
from training.forecaster import DemandForecaster

MONDAY = pd.Timestamp("2024-01-01")
LEVEL_TAIL = [9.0, 12, 10, 11, 8, 13, 10, 7]  # the last 8 weeks before the origin


def weekly_panel(units: dict[tuple[int, int], list[float]], price: float = 2.0) -> pd.DataFrame:
    """Dense weekly panel from each series' units; net sales are units x price."""
    frames = [
        pd.DataFrame(
            {
                "store_id": store,
                "product_id": product,
                "period": pd.date_range(MONDAY, periods=len(values), freq="7D"),
                "units": np.asarray(values, float),
            }
        )
        for (store, product), values in units.items()
    ]
    panel = pd.concat(frames, ignore_index=True)
    return panel.assign(net_sales=panel["units"] * price)


@pytest.fixture(scope="module")
def panel() -> pd.DataFrame:
    """3 series x 30 weeks: a constant, a level around 10 after a slow start, an intermittent."""
    return weekly_panel(
        {
            (1, 10): [5.0] * 30,
            (1, 11): [2.0] * 18 + LEVEL_TAIL + [10.0] * 4,
            (2, 10): [0.0, 0, 3, 0, 1, 0] * 5,
        }
    )


def test_rolling_origins_are_back_to_back_windows_ending_at_the_last_period():
    grid = pd.date_range(MONDAY, periods=20, freq="7D")
    # windows start at periods 8, 12 and 16 and end at 19; periods 0..7 are history
    assert rolling_origins(grid, n_origins=3, horizon=4) == [
        pd.Timestamp("2024-02-26"),
        pd.Timestamp("2024-03-25"),
        pd.Timestamp("2024-04-22"),
    ]
    assert rolling_origins(grid.to_numpy()[4:], n_origins=3, horizon=4)[0] == grid[8]


def test_rolling_origins_refuse_a_grid_without_a_horizon_of_history():
    grid = pd.date_range(MONDAY, periods=15, freq="7D")
    with pytest.raises(ValueError, match="need 16 periods but the grid has 15"):
        rolling_origins(grid, n_origins=3, horizon=4)


def test_statistical_forecasts_columns_steps_and_periods(panel):
    origin = MONDAY + pd.Timedelta(weeks=26)
    got = statistical_forecasts(panel, origin, horizon=4, freq="W")
    assert list(got.columns) == ["store_id", "product_id", "step", "period", "model", "forecast"]
    assert len(got) == 3 * len(STAT_MODELS) * 4
    assert set(got["model"]) == set(STAT_MODELS)
    steps = got.groupby(["store_id", "product_id", "model"])["step"].apply(list)
    assert len(steps) == 3 * len(STAT_MODELS)
    assert all(series_steps == [1, 2, 3, 4] for series_steps in steps)
    expected_periods = origin + pd.to_timedelta(7 * (got["step"] - 1), "D")
    assert (got["period"] == expected_periods).all()
    assert np.isfinite(got["forecast"]).all()
    assert (got["forecast"] >= 0).all()


def test_naive_and_moving_average_hand_computed(panel):
    got = (
        statistical_forecasts(
            panel,
            MONDAY + pd.Timedelta(weeks=26),
            4,
            "W",
            models=["seasonal_naive", "moving_average"],
        )
        .set_index(["store_id", "product_id", "model"])["forecast"]
        .sort_index()
    )
    assert got.loc[(1, 10, "seasonal_naive")].tolist() == pytest.approx([5.0] * 4)
    assert got.loc[(1, 10, "moving_average")].tolist() == pytest.approx([5.0] * 4)
    # weekly "seasonal" naive repeats last week; the moving average is the mean of the last 8
    assert got.loc[(1, 11, "seasonal_naive")].tolist() == pytest.approx([7.0] * 4)
    assert got.loc[(1, 11, "moving_average")].tolist() == pytest.approx([80.0 / 8] * 4)
    assert got.loc[(2, 10, "moving_average")].tolist() == pytest.approx(
        [(0 + 0 + 3 + 0 + 1 + 0 + 0 + 0) / 8] * 4
    )


def test_statistical_forecasts_refuse_a_short_history_and_an_unknown_model(panel):
    with pytest.raises(ValueError, match="leaves 6 periods of history"):
        statistical_forecasts(panel, MONDAY + pd.Timedelta(weeks=6), 4, "W")
    with pytest.raises(ValueError, match="unknown models"):
        statistical_forecasts(panel, MONDAY + pd.Timedelta(weeks=26), 4, "W", models=["prophet"])
    with pytest.raises(ValueError, match="not a W period"):
        statistical_forecasts(panel, MONDAY + pd.Timedelta(days=180), 4, "W")


def test_a_panel_with_a_missing_period_is_refused(panel):
    with pytest.raises(ValueError, match="every W period"):
        sales_weights(panel.drop(index=40), MONDAY + pd.Timedelta(weeks=26), "W")


def test_sales_weights_sum_the_four_weeks_before_the_origin(panel):
    got = sales_weights(panel, MONDAY + pd.Timedelta(weeks=26), "W")
    # weeks 22..25; net sales are twice the units
    assert got.loc[(1, 10)] == pytest.approx(2 * 4 * 5.0)
    assert got.loc[(1, 11)] == pytest.approx(2 * sum(LEVEL_TAIL[-4:]))
    assert got.loc[(2, 10)] == pytest.approx(2 * (1 + 0 + 0 + 0))


def test_score_table_hand_computed():
    panel = weekly_panel({(1, 1): [1, 3, 1, 3, 2, 4], (1, 2): [2, 2, 2, 2, 5, 5]}, price=1.0)
    panel.loc[panel["product_id"] == 1, "net_sales"] *= 10
    week = [MONDAY + pd.Timedelta(weeks=i) for i in range(6)]
    rows = [
        # store, product, origin, step, forecast, actual, p10, p50, p90
        (1, 1, week[4], 1, 3, 2, 1, 3, 5),
        (1, 1, week[4], 2, 3, 4, 1, 3, 3),
        (1, 2, week[4], 1, 4, 5, 4, 4, 6),
        (1, 2, week[4], 2, 4, 5, 6, 4, 6),
        (1, 1, week[5], 1, 4, 4, 3, 4, 4),
        (1, 2, week[5], 1, 8, 5, 4, 8, 9),
    ]
    columns = ["store_id", "product_id", "origin", "step", "forecast", "units", "p10", "p50", "p90"]
    quantiled = pd.DataFrame(rows, columns=columns).assign(model="m")
    exact = quantiled.assign(model="exact", forecast=quantiled["units"], p10=np.nan)
    scored = pd.concat([quantiled, exact], ignore_index=True)
    scored["period"] = scored["origin"] + pd.to_timedelta(7 * (scored["step"] - 1), "D")

    table = score_table(scored, panel, "W")

    m = table.loc["m"]
    # origin 4: errors 1, 1, 1, 1 over 16 units, forecast 14; origin 5: error 3 over 9, +3
    assert m["wape"] == pytest.approx((4 / 16 + 3 / 9) / 2)
    assert m["bias"] == pytest.approx((-2 / 16 + 3 / 9) / 2)
    # origin 4: series 1 scale 4, mean squared error 1 -> 0.5; series 2 constant -> no scale
    # origin 5: series 1 exact -> 0; series 2 scale 9/4, squared error 9 -> 2
    assert m["rmsse"] == pytest.approx((0.5 + (0 + 2) / 2) / 2)
    # origin 5 weights: net sales of weeks 1..4 = 10 x 9 and 1 x 11
    assert m["wrmsse"] == pytest.approx((0.5 + (90 * 0 + 11 * 2) / 101) / 2)
    # origin 4: p90 misses 4 > 3; p10..p90 also misses 5 < 6; origin 5 covers both
    assert m["p90_coverage"] == pytest.approx((3 / 4 + 1) / 2)
    assert m["p10_p90_coverage"] == pytest.approx((2 / 4 + 1) / 2)
    # origin 4: q10 1.4 / 4, q50 2 / 4, q90 1.4 / 4; origin 5: q10 0.1, q50 0.75, q90 0.2
    assert m["pinball"] == pytest.approx(((0.35 + 0.5 + 0.35) / 3 + (0.1 + 0.75 + 0.2) / 3) / 2)
    assert m["origins"] == 2
    exact_row = table.loc["exact"]
    assert exact_row[["wape", "bias", "rmsse", "wrmsse"]].tolist() == pytest.approx([0] * 4)
    assert exact_row[["pinball", "p90_coverage", "p10_p90_coverage"]].isna().all()


def test_score_table_refuses_a_series_not_in_the_panel(panel):
    scored = pd.DataFrame(
        {
            "store_id": [9],
            "product_id": [9],
            "origin": [MONDAY + pd.Timedelta(weeks=26)],
            "step": [1],
            "period": [MONDAY + pd.Timedelta(weeks=26)],
            "model": ["m"],
            "forecast": [1.0],
            "units": [1.0],
        }
    )
    with pytest.raises(ValueError, match=r"\[9, 9\].*not in the panel"):
        score_table(scored, panel, "W")


def daily_features(panel: pd.DataFrame, stamps: pd.DatetimeIndex) -> pd.DataFrame:
    """What a point-in-time join gives for every series: the last day's units, the 7-day mean."""
    units = panel.pivot_table(index="period", columns=["store_id", "product_id"], values="units")
    frames = []
    for stamp in stamps:
        history = units[units.index < stamp]
        frames.append(
            pd.DataFrame(
                {
                    "event_timestamp": stamp,
                    "units_lag_1": history.iloc[-1],
                    "units_mean_7d": history.iloc[-7:].mean(),
                }
            ).reset_index()
        )
    return pd.concat(frames, ignore_index=True)


def test_each_origin_scores_the_series_chosen_before_it_so_fading_ones_cannot_leak_out():
    days = pd.date_range(MONDAY, periods=140, freq="D")
    origin = days[112]
    shape = np.array([1, 1, 1, 1, 2, 5, 4], float)[days.weekday]
    fading = np.where((days < origin) & (days.weekday < 4), 3.0, 0.0)  # 4 of 7 days, then none
    starting = np.where(days >= origin, 2.0, 0.0)
    panel = pd.concat(
        [
            pd.DataFrame({"store_id": 1, "product_id": product, "period": days, "units": units})
            for product, units in ((1, shape), (2, fading), (3, starting))
        ],
        ignore_index=True,
    )
    panel["net_sales"] = panel["units"] * 2.0
    features = daily_features(panel, days[14:113])
    result = backtest(
        lambda: DemandForecaster("D", params={"min_data_in_leaf": 5}, num_boost_round=50),
        panel,
        features,
        "D",
        [origin],
        stat_models=("moving_average",),
    )
    scored = result.scored.groupby("model")["product_id"].unique()
    # The fading series sold on 46% of all days but 57% of those before the origin: it is
    # forecast and scored on its silent window; the series that starts there is not chosen.
    for model in ("omnishelf", "moving_average"):
        assert sorted(scored[model]) == [1, 2]
    assert result.models[origin].series_.get_level_values("product_id").tolist() == [1, 2]
    silent = result.scored[result.scored["product_id"] == 2]
    assert len(silent) == 2 * 28 and silent["units"].eq(0).all()
    assert result.table.loc["omnishelf", "origins"] == 1
