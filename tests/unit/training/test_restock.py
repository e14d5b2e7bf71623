import numpy as np
import pytest
from scipy.stats import norm

from training.restock import order_quantities


def test_daily_order_covers_lead_time_plus_review_with_safety_stock():
    forecast = np.full((1, 28), 2.0)  # 2 units a day
    result = order_quantities(
        forecast,
        1,
        demand_std=np.array([1.0]),
        on_hand=np.array([5.0]),
        lead_time_days=np.array([3]),
        service_level=0.95,
    )
    cover = 3 + 7
    expected_up_to = 2.0 * cover + norm.ppf(0.95) * 1.0 * np.sqrt(cover)
    assert result["expected_demand"][0] == pytest.approx(20.0)
    assert result["order_up_to"][0] == pytest.approx(expected_up_to)
    assert result["order_quantity"][0] == np.ceil(expected_up_to - 5.0)


def test_weekly_forecast_is_spread_over_days_and_enough_stock_orders_nothing():
    forecast = np.array([[7.0, 14.0, 0.0, 0.0], [7.0, 7.0, 7.0, 7.0]])
    result = order_quantities(
        forecast,
        7,
        demand_std=np.zeros(2),
        on_hand=np.array([0.0, 100.0]),
        lead_time_days=np.array([2, 2]),
        service_level=0.9,
        on_order=np.array([1.0, 0.0]),
    )
    # 9 days of cover: 7 days at 1/day + 2 days at 2/day
    assert result["expected_demand"][0] == pytest.approx(11.0)
    assert result["order_quantity"].tolist() == [10.0, 0.0]


def test_cover_beyond_horizon_is_refused():
    with pytest.raises(ValueError, match="exceeds the forecast horizon"):
        order_quantities(np.ones((1, 7)), 1, np.ones(1), np.zeros(1), np.array([3]), 0.9)
