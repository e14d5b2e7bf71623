import numpy as np
import pytest
from scipy.stats import norm

from training.restock import (
    cover_distribution,
    daily_profile,
    order_quantities,
    order_up_to_level,
    round_to_packs,
)

Z90 = norm.ppf(0.9)


def test_daily_profile_splits_each_period_evenly_over_its_days():
    weekly = np.array([[7.0, 14.0], [0.0, 3.5]])
    daily = daily_profile(weekly, 7)
    assert daily.shape == (2, 14)
    assert daily[0].tolist() == [1.0] * 7 + [2.0] * 7
    assert daily[1].tolist() == [0.0] * 7 + [0.5] * 7
    assert daily_profile(weekly, 1).tolist() == weekly.tolist()


def test_cover_distribution_prorates_mean_and_variance_day_by_day():
    mean = np.array([[7.0, 14.0], [7.0, 14.0]])
    sigma = np.array([[7.0, 14.0], [7.0, 14.0]])  # weekly variances 49 and 196: 7 and 28 a day
    mean_cover, std_cover = cover_distribution(mean, sigma, 7, np.array([9, 14]))
    # 9 days: all of week 1 and 2 days of week 2; 14 days: both weeks
    assert mean_cover.tolist() == pytest.approx([7 + 2 * 2, 21.0])
    assert std_cover.tolist() == pytest.approx([np.sqrt(7 * 7 + 2 * 28), np.sqrt(49 + 196)])


def test_cover_beyond_the_horizon_is_refused():
    mean = np.ones((2, 2))
    with pytest.raises(ValueError, match="15 days .* exceeds the forecast horizon of 14 days"):
        cover_distribution(mean, mean, 7, np.array([14, 15]))


@pytest.mark.parametrize("bad", [-0.5, np.nan])
def test_negative_or_missing_spread_is_refused(bad):
    mean = np.ones((1, 3))
    with pytest.raises(ValueError, match="std is negative or missing .* series 0, period 1"):
        cover_distribution(mean, np.array([[0.5, bad, 0.5]]), 1, 2)


def test_normal_order_up_to_is_mean_plus_z_std_floored_at_zero():
    mean, std = np.array([20.0, 5.0, -3.0]), np.array([4.0, 0.0, 1.0])
    got = order_up_to_level(mean, std, 0.95, distribution="normal")
    assert got.tolist() == pytest.approx([20 + norm.ppf(0.95) * 4, 5.0, 0.0])


def test_gamma_order_up_to_matches_a_hand_computed_exponential():
    # mean = std = 2: shape 1, scale 2, an exponential whose p-quantile is -2 ln(1 - p)
    got = order_up_to_level(np.array([2.0]), np.array([2.0]), 0.95)
    assert got[0] == pytest.approx(2 * np.log(20))


def test_gamma_order_up_to_is_above_the_mean_and_grows_with_service_level():
    mean, std = np.array([3.0, 40.0]), np.array([2.0, 10.0])
    levels = [0.8, 0.9, 0.95, 0.99]
    by_level = np.array([order_up_to_level(mean, std, level) for level in levels])
    assert (by_level > mean).all()
    assert (np.diff(by_level, axis=0) > 0).all()


def test_gamma_is_skewed_where_the_normal_is_not():
    # a slow seller: the normal tail is too thin for a right-skewed demand
    mean, std = np.array([1.0]), np.array([1.5])
    gamma_level = order_up_to_level(mean, std, 0.99)
    normal_level = order_up_to_level(mean, std, 0.99, distribution="normal")
    assert gamma_level[0] > normal_level[0]


def test_gamma_without_spread_is_the_mean_and_without_demand_is_zero():
    got = order_up_to_level(np.array([12.0, 0.0, 0.0]), np.array([0.0, 0.0, 3.0]), 0.95)
    assert got.tolist() == [12.0, 0.0, 0.0]


@pytest.mark.parametrize("level", [0.5, 1.0, 0.9999])
def test_service_level_outside_range_is_refused(level):
    with pytest.raises(ValueError, match="service_level"):
        order_up_to_level(np.ones(1), np.ones(1), level)


def test_unknown_distribution_is_refused():
    with pytest.raises(ValueError, match="distribution"):
        order_up_to_level(np.ones(1), np.ones(1), 0.9, distribution="poisson")


def test_round_to_packs_rounds_up_to_whole_packs_and_zero_stays_zero():
    raw = np.array([0.0, 0.2, 5.0, 6.0, 6.5])
    assert round_to_packs(raw, pack_size=3).tolist() == [0.0, 3.0, 6.0, 6.0, 9.0]
    assert round_to_packs(raw).tolist() == [0.0, 1.0, 5.0, 6.0, 7.0]


def test_round_to_packs_ignores_float_noise():
    raw = np.array([(0.1 + 0.2) * 30])  # 9.000000000000002
    assert round_to_packs(raw, pack_size=3).tolist() == [9.0]


def test_minimum_order_is_raised_to_whole_packs_and_only_for_placed_orders():
    raw = np.array([0.0, 1.0, 10.0, 13.0])
    # MOQ 10 in packs of 6 is 12 units
    assert round_to_packs(raw, pack_size=6, min_order_qty=10).tolist() == [0.0, 12.0, 12.0, 18.0]
    assert round_to_packs(raw, min_order_qty=5).tolist() == [0.0, 5.0, 10.0, 13.0]
    per_series = round_to_packs(raw, pack_size=np.array([1, 4, 4, 1]), min_order_qty=2)
    assert per_series.tolist() == [0.0, 4.0, 12.0, 13.0]


def test_order_quantities_per_series_lead_times_packs_and_open_orders():
    mean = np.full((3, 28), 2.0)  # 2 units a day, no spread: S is the mean over the cover
    result = order_quantities(
        mean,
        np.zeros_like(mean),
        1,
        on_hand=np.array([5.0, 5.0, 30.0]),
        lead_time_days=np.array([3, 5, 3]),
        service_level=0.95,
        on_order=np.array([0.0, 4.0, 0.0]),
        pack_size=np.array([4, 1, 1]),
    )
    # covers 10, 12 and 10 days
    assert result["expected_demand"].tolist() == pytest.approx([20.0, 24.0, 20.0])
    assert result["order_up_to"].tolist() == pytest.approx([20.0, 24.0, 20.0])
    # 20 - 5 = 15 -> 16 in packs of 4; 24 - 5 - 4 = 15; 30 on hand already covers 20
    assert result["order_quantity"].tolist() == [16.0, 15.0, 0.0]


def test_order_quantities_weekly_forecast_with_spread_and_minimum_order():
    mean = np.array([[7.0, 14.0, 7.0]])
    result = order_quantities(
        mean,
        np.array([[7.0, 14.0, 7.0]]),
        7,
        on_hand=np.array([10.0]),
        lead_time_days=2,
        service_level=0.9,
        min_order_qty=np.array([24.0]),
        distribution="normal",
    )
    expected_up_to = 11.0 + Z90 * np.sqrt(7 * 7 + 2 * 28)  # the 9-day cover of the test above
    assert result["order_up_to"][0] == pytest.approx(expected_up_to)
    assert np.ceil(expected_up_to - 10.0) < 24.0
    assert result["order_quantity"].tolist() == [24.0]


def test_order_quantities_defaults_to_gamma():
    mean = np.array([[2.0] * 14])
    args = (mean, np.full((1, 14), 2.0), 1, np.zeros(1), np.array([0]), 0.95)
    assert order_quantities(*args)["order_up_to"][0] == pytest.approx(
        order_quantities(*args, distribution="gamma")["order_up_to"][0]
    )
    assert order_quantities(*args)["order_up_to"][0] != pytest.approx(
        order_quantities(*args, distribution="normal")["order_up_to"][0]
    )


@pytest.mark.parametrize(
    ("overrides", "argument"),
    [
        ({"on_hand": np.array([-1.0])}, "on_hand"),
        ({"on_order": np.array([-2.0])}, "on_order"),
        ({"pack_size": np.array([0.0])}, "pack_size"),
        ({"service_level": 0.4}, "service_level"),
        ({"lead_time_days": np.array([-1])}, "lead_time_days"),
    ],
)
def test_order_quantities_refuses_bad_arguments_by_name(overrides, argument):
    mean = np.ones((1, 14))
    kwargs = {"on_hand": np.zeros(1), "lead_time_days": np.array([2]), "service_level": 0.9}
    with pytest.raises(ValueError, match=argument):
        order_quantities(mean, mean, 1, **{**kwargs, **overrides})
