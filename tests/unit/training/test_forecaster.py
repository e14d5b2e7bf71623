import numpy as np
import pandas as pd
import pytest

from training.forecaster import DemandForecaster, calendar_features, expand_steps, seasonal_naive


def daily_panel(days: int = 70) -> pd.DataFrame:
    periods = pd.date_range("2024-01-01", periods=days, freq="D")  # a Monday
    weekly = np.array([1, 1, 1, 1, 2, 5, 4], dtype=float)
    frames = [
        pd.DataFrame(
            {
                "store_id": 1,
                "product_id": p,
                "period": periods,
                "units": scale * weekly[periods.weekday],
            }
        )
        for p, scale in ((1, 1.0), (2, 3.0))
    ]
    return pd.concat(frames, ignore_index=True)


def test_seasonal_naive_repeats_last_week_for_daily_and_last_period_for_weekly():
    panel = daily_panel()
    origin = pd.Timestamp("2024-03-04")  # a Monday
    naive = seasonal_naive(panel, origin, "D", horizon=8)
    product_1 = naive[naive["product_id"] == 1].sort_values("step")
    assert product_1["forecast"].tolist() == [1, 1, 1, 1, 2, 5, 4, 1]
    assert product_1["period"].iloc[0] == origin
    weekly = pd.DataFrame(
        {
            "store_id": 1,
            "product_id": 1,
            "period": pd.date_range("2024-01-01", periods=4, freq="7D"),
            "units": [3.0, 4.0, 5.0, 6.0],
        }
    )
    naive = seasonal_naive(weekly, pd.Timestamp("2024-01-29"), "W", horizon=2)
    assert naive["forecast"].tolist() == [6.0, 6.0]


def test_expand_steps_dates_each_step():
    at_origin = pd.DataFrame(
        {"store_id": [1], "product_id": [1], "event_timestamp": [pd.Timestamp("2024-01-08")]}
    )
    rows = expand_steps(at_origin, "W", horizon=3)
    assert rows["step"].tolist() == [1, 2, 3]
    assert rows["period"].dt.strftime("%m-%d").tolist() == ["01-08", "01-15", "01-22"]


def test_calendar_counts_holidays_inside_each_period():
    starts = pd.Series(pd.to_datetime(["2024-07-01", "2024-07-08", "2024-12-23"]))
    calendar = calendar_features(starts, "W", "US")
    assert calendar["holidays_in_period"].tolist() == [1, 0, 1]  # July 4th, Christmas


def test_forecaster_learns_the_weekly_shape_from_features_at_origin():
    panel = daily_panel(140)
    units = panel.pivot(index="period", columns="product_id", values="units")
    origins = pd.date_range("2024-01-15", "2024-04-01", freq="D")
    rows = []
    for origin in origins:  # the features a point-in-time join would give
        history = units[units.index < origin]
        for product in units.columns:
            rows.append(
                {
                    "store_id": 1,
                    "product_id": product,
                    "event_timestamp": origin,
                    "units_lag_1": history[product].iloc[-1],
                    "units_mean_7": history[product].iloc[-7:].mean(),
                }
            )
    at_origin = pd.DataFrame(rows)
    model = DemandForecaster("D", params={"min_data_in_leaf": 5}, num_boost_round=200)
    model.fit(at_origin[at_origin["event_timestamp"] < "2024-03-15"], panel)
    predicted = model.predict(at_origin[at_origin["event_timestamp"] == "2024-03-18"])
    merged = predicted.merge(panel, on=["store_id", "product_id", "period"])
    assert len(predicted) == 2 * 28
    assert np.abs(merged["forecast"] - merged["units"]).sum() / merged["units"].sum() < 0.15
    assert model.next_origin_ == panel["period"].max() + pd.Timedelta(days=1)
    with pytest.raises(ValueError, match="no training rows"):
        DemandForecaster("D").fit(at_origin, panel.iloc[:0])
