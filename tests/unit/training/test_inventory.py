import math

import numpy as np
import pytest

from training.inventory import (
    SimulationResult,
    kpis,
    matched_baseline,
    moving_average_order_up_to,
    order_up_to_coverage,
    simulate,
)


def test_two_series_ten_days_hand_computed():
    demand = np.array(
        [
            [4, 4, 4, 0, 0, 5, 5, 0, 0, 0],
            [2, 2, 2, 2, 2, 2, 2, 2, 2, 2],
        ],
        dtype=float,
    )
    # Reviews at the start of days 0 and 5.
    # Series 0, lead 0: day 0 orders 10 - 2 = 8, here before sales; end of day 6 2 0(lost 2) 0 0;
    #   day 5 orders 6 - 0 = 6; end 1, then 0 (lost 4) 0 0 0. Sold 16, lost 6, 2 stockout days.
    # Series 1, lead 2: day 0 orders 12 - 5 = 7, due day 2; end 3 1 6 4 2;
    #   day 5 orders 12 - 2 = 10, due day 7; end 0, 0 (lost 2), 8 6 4. Sold 18, lost 2, 1 day.
    result = simulate(
        demand,
        order_up_to=np.array([[10.0, 6.0], [12.0, 12.0]]),
        lead_time_days=np.array([0, 2]),
        initial_on_hand=np.array([2.0, 5.0]),
        review_days=5,
    )
    on_hand_0 = [6, 2, 0, 0, 0, 1, 0, 0, 0, 0]
    on_hand_1 = [3, 1, 6, 4, 2, 0, 0, 8, 6, 4]
    avg_on_hand = (sum(on_hand_0) + sum(on_hand_1)) / 20
    assert result.stockout_rate == pytest.approx(3 / 20)
    assert result.lost_units == pytest.approx(8.0)
    assert result.fill_rate == pytest.approx(34 / 42)
    assert result.avg_on_hand == pytest.approx(avg_on_hand)
    assert result.avg_on_hand == pytest.approx(2.15)
    assert result.inventory_turns == pytest.approx(34 * 365 / 10 / (2.15 * 2))
    assert result.orders == 4


def test_same_day_delivery_arrives_before_sales_and_a_later_one_does_not():
    demand = np.array([[3.0, 0.0, 0.0], [3.0, 0.0, 0.0]])
    result = simulate(demand, np.array([[5.0], [5.0]]), np.array([0, 1]), np.zeros(2))
    # lead 0: sells 3, ends the days with 2 2 2; lead 1: loses 3, receives 5 on day 1: 0 5 5
    assert result.stockout_rate == pytest.approx(1 / 6)
    assert result.lost_units == pytest.approx(3.0)
    assert result.avg_on_hand == pytest.approx((2 + 2 + 2 + 0 + 5 + 5) / 6)


def test_open_orders_count_towards_the_position_at_the_next_review():
    # lead 3 > review 2: the day-0 order is still open at the day-2 review
    demand = np.zeros((1, 4))
    result = simulate(demand, np.array([[6.0, 6.0]]), np.array([3]), np.zeros(1), review_days=2)
    assert result.orders == 1
    assert result.avg_on_hand == pytest.approx(6 / 4)  # 0 0 0 6


def test_orders_are_rounded_to_packs_and_the_minimum():
    demand = np.zeros((1, 8))
    result = simulate(
        demand,
        np.array([[7.0, 7.0]]),
        np.array([0]),
        np.zeros(1),
        pack_size=np.array([6]),
        min_order_qty=np.array([10]),
    )
    # 7 wanted -> MOQ 10 -> 12 in packs of 6; at the day-7 review 12 on hand is above S
    assert result.avg_on_hand == pytest.approx(12.0)
    assert result.orders == 1


def test_no_demand_and_no_stock():
    result = simulate(np.zeros((2, 3)), np.zeros((2, 1)), np.zeros(2), np.zeros(2))
    assert result.fill_rate == 1.0
    assert result.stockout_rate == 0.0
    assert math.isnan(result.inventory_turns)


def test_as_dict_gives_every_field_as_a_float():
    result = SimulationResult(0.1, 0.9, 3.0, 2.5, 12.0, 4)
    assert result.as_dict() == {
        "stockout_rate": 0.1,
        "fill_rate": 0.9,
        "lost_units": 3.0,
        "avg_on_hand": 2.5,
        "inventory_turns": 12.0,
        "orders": 4.0,
    }
    assert isinstance(result.as_dict()["orders"], float)


def test_order_up_to_of_the_wrong_shape_is_refused():
    with pytest.raises(ValueError, match=r"expected \(1, 2\)"):
        simulate(np.zeros((1, 8)), np.zeros((1, 1)), np.zeros(1), np.zeros(1))


def test_moving_average_order_up_to_hand_computed():
    history_and_demand = np.array([[1, 2, 3, 4, 5, 6], [0, 0, 6, 0, 0, 0]], dtype=float)
    got = moving_average_order_up_to(
        history_and_demand, first_day=3, days=3, cover_days=1.5, window=3, review_days=2
    )
    # reviews on days 3 and 5: windows days 0-2 and 2-4
    np.testing.assert_allclose(got, [[1.5 * 2, 1.5 * 4], [1.5 * 2, 1.5 * 2]])


def test_moving_average_needs_a_full_window_of_history():
    with pytest.raises(ValueError, match="window"):
        moving_average_order_up_to(np.ones((1, 30)), first_day=2, days=7, cover_days=3, window=3)


def test_matched_baseline_picks_the_smallest_cover_reaching_the_target():
    # 1 unit a day, one review on day 0, lead 0: cover c stocks c units, and the end-of-day
    # on-hand is c - 1, c - 2, ..., 0, so avg on-hand over 7 days is c (c - 1) / 2 / 7
    demand = np.ones((1, 7))
    history_and_demand = np.ones((1, 9))
    kwargs = {"lead_time_days": np.array([0]), "initial_on_hand": np.zeros(1), "window": 2}
    cover, result = matched_baseline(
        demand,
        history_and_demand,
        2,
        target_avg_on_hand=0.4,
        cover_days_grid=[4, 1, 3, 2],
        **kwargs,
    )
    assert cover == 3.0
    assert result.avg_on_hand == pytest.approx(3 / 7)
    assert result.stockout_rate == pytest.approx(4 / 7)  # days 3-6 find the shelf empty

    cover, result = matched_baseline(
        demand,
        history_and_demand,
        2,
        target_avg_on_hand=1.0,
        cover_days_grid=[1, 2, 3, 4],
        **kwargs,
    )
    assert cover == 4.0  # none reaches 1.0: the largest cover
    assert result.avg_on_hand == pytest.approx(6 / 7)


def test_matched_baseline_refuses_demand_that_is_not_the_simulated_slice():
    with pytest.raises(ValueError, match="first_day"):
        matched_baseline(
            np.ones((1, 7)),
            np.concatenate([np.zeros((1, 2)), np.ones((1, 7))], axis=1),
            first_day=1,
            lead_time_days=np.array([0]),
            initial_on_hand=np.zeros(1),
            target_avg_on_hand=0.0,
            window=1,
        )


def test_per_series_figures_sum_to_the_headline_and_break_down_alike():
    rng = np.random.default_rng(3)
    demand = rng.poisson(2.0, size=(6, 28)).astype(float)
    result = simulate(demand, np.full((6, 4), 9.0), np.array([0, 1, 2, 0, 1, 2]), np.full(6, 5.0))
    per_series = result.per_series
    assert len(per_series) == 6 and (per_series["days"] == 28).all()
    assert per_series["sold"].sum() + per_series["lost"].sum() == pytest.approx(demand.sum())
    whole = kpis(per_series)
    for name in ("stockout_rate", "fill_rate", "lost_units", "avg_on_hand", "inventory_turns"):
        assert whole[name] == pytest.approx(getattr(result, name))
    first = simulate(demand[:3], np.full((3, 4), 9.0), np.array([0, 1, 2]), np.full(3, 5.0))
    assert kpis(per_series.iloc[:3])["stockout_rate"] == pytest.approx(first.stockout_rate)


def test_order_up_to_coverage_hand_computed():
    demand = np.array(
        [
            [1.0] * 12,
            [0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 0, 0],
        ]
    )
    # Reviews on days 2, 5 and 8, every 3 days. Series 0, lead 1: covers of 4 days, demand 4
    # each time, against S 4, 3, 5. Series 1, lead 2: days 2-6 hold 5 and days 5-9 hold 3,
    # against S 4 and 3; its third cover (days 8-12) runs past the data.
    covered = order_up_to_coverage(
        np.array([[4.0, 3.0, 5.0], [4.0, 3.0, 0.0]]),
        demand,
        first_day=2,
        lead_time_days=np.array([1, 2]),
        review_days=3,
    )
    assert covered == pytest.approx(3 / 5)
    with pytest.raises(ValueError, match="no review has its whole cover"):
        order_up_to_coverage(np.ones((1, 1)), np.ones((1, 3)), 2, np.array([1]), 3)
