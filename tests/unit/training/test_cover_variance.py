import numpy as np
import pytest

from training.cover_variance import MIN_COVERS, cover_variance_ratios
from training.restock import cover_distribution


def test_errors_that_go_together_add_up_to_more_than_their_variances():
    # Every day of a cover errs the same way (+1 or -1), each day's variance is 1: a cover of
    # d days errs by d, squared d**2, against a summed variance of d.
    signs = np.repeat([[1.0], [-1.0]], MIN_COVERS, axis=0)
    together = cover_variance_ratios(np.tile(signs, 4), np.ones((2 * MIN_COVERS, 4)), 1)
    assert together.tolist() == [1.0, 2.0, 3.0, 4.0]
    # Alternating days cancel out: the ratio is floored at 1, never thinning a safety stock.
    alternating = np.tile(signs * [[1.0, -1.0]], 2)
    apart = cover_variance_ratios(alternating, np.ones((2 * MIN_COVERS, 4)), 1)
    assert apart.tolist() == [1.0, 1.0, 1.0, 1.0]


def test_weekly_periods_are_shared_by_their_days_and_unscored_periods_drop_their_covers():
    error = np.full((MIN_COVERS, 2), 7.0)  # 1 a day, every day
    variance = np.full((MIN_COVERS, 2), 7.0)
    ratios = cover_variance_ratios(error, variance, 7)
    assert ratios.shape == (14,)
    assert ratios == pytest.approx(np.arange(1, 15))
    # One cover of the 30 has its second week censored: 14-day covers are too few to judge.
    error[0, 1] = np.nan
    censored = cover_variance_ratios(error, variance, 7)
    assert censored[:7] == pytest.approx(np.arange(1, 8))
    assert (censored[7:] == 1.0).all()


def test_the_ratio_scales_the_cover_variance_of_its_length():
    mean, std = np.full((2, 3), 2.0), np.full((2, 3), 1.0)
    _, independent = cover_distribution(mean, std, 1, np.array([2, 3]))
    _, together = cover_distribution(mean, std, 1, np.array([2, 3]), np.array([1.0, 2.0, 3.0]))
    assert independent**2 == pytest.approx([2.0, 3.0])
    assert together**2 == pytest.approx([4.0, 9.0])
