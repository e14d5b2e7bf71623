import numpy as np
import pytest

from training.metrics import (
    bias,
    coverage,
    coverage_at_k,
    hit_rate_at_k,
    map_at_k,
    ndcg_at_k,
    pinball_loss,
    recall_at_k,
    rmsse,
    wape,
    wrmsse,
)


def test_recall_counts_hits_over_relevant_and_skips_users_without_truth():
    relevant = [{1, 2, 3, 4}, {9}, set()]
    recommended = [[1, 5, 2], [8, 7, 6], [1, 2, 3]]
    # user 1: 2 of 4 relevant in top-3; user 2: 0 of 1; user 3 skipped
    assert recall_at_k(relevant, recommended, k=3) == pytest.approx((0.5 + 0.0) / 2)
    assert recall_at_k(relevant, recommended, k=1) == pytest.approx((0.25 + 0.0) / 2)


def test_ndcg_hand_computed():
    # hits at ranks 1 and 3 of 3; two relevant items: ideal = 1 + 1/log2(3)
    got = ndcg_at_k([{"a", "c"}], [["a", "b", "c"]], k=3)
    expected = (1 + 1 / np.log2(4)) / (1 + 1 / np.log2(3))
    assert got == pytest.approx(expected)
    assert ndcg_at_k([{"a"}], [["a", "b"]], k=2) == pytest.approx(1.0)
    assert ndcg_at_k([{"z"}], [["a", "b"]], k=2) == 0.0


def test_wape_and_bias_hand_computed():
    actual, forecast = np.array([10, 0, 5]), np.array([8, 1, 5])
    assert wape(actual, forecast) == pytest.approx(3 / 15)
    assert bias(actual, forecast) == pytest.approx(-1 / 15)
    with pytest.raises(ValueError, match="undefined"):
        wape(np.zeros(3), np.ones(3))


def test_hit_rate_map_and_coverage_hand_computed():
    relevant = [{1, 3}, {9}, set()]
    recommended = [[1, 2, 3], [8, 7, 6], [1, 2, 3]]
    assert hit_rate_at_k(relevant, recommended, k=3) == pytest.approx(0.5)
    # user 1: hits at ranks 1 and 3 -> (1/1 + 2/3) / min(2, 3); user 2: 0
    assert map_at_k(relevant, recommended, k=3) == pytest.approx(((1 + 2 / 3) / 2 + 0) / 2)
    # user 1 at k=2: one hit at rank 1, over min(2, 2)
    assert map_at_k(relevant, recommended, k=2) == pytest.approx((1 / 2 + 0) / 2)
    assert coverage_at_k(recommended, k=2, catalogue_size=10) == pytest.approx(4 / 10)


def test_padding_is_never_a_hit():
    assert recall_at_k([{-1, 5}], [[-1, -1, 5]], k=3) == pytest.approx(0.5)
    assert coverage_at_k([[-1, -1]], k=2, catalogue_size=4) == 0.0


def test_rmsse_per_series_hand_computed():
    history = np.array([[1, 2, 4, 4], [5, 3, 3, 1]])
    actual, forecast = np.array([[4, 6], [2, 2]]), np.array([[4, 4], [0, 2]])
    # series 1: diffs 1, 2, 0 -> scale 5/3; squared errors 0, 4 -> mean 2
    # series 2: diffs -2, 0, -2 -> scale 8/3; squared errors 4, 0 -> mean 2
    got = rmsse(actual, forecast, history)
    assert got == pytest.approx([np.sqrt(2 / (5 / 3)), np.sqrt(2 / (8 / 3))])


def test_rmsse_is_nan_for_a_series_without_scale():
    got = rmsse(np.array([[3, 3]]), np.array([[2, 2]]), np.array([[7, 7, 7]]))
    assert np.isnan(got).all()


def test_wrmsse_renormalises_weights_over_series_with_a_scale():
    history = np.array([[1, 2, 4, 4], [5, 3, 3, 1], [7, 7, 7, 7]])
    actual = np.array([[4, 6], [2, 2], [7, 9]])
    forecast = np.array([[4, 4], [0, 2], [0, 0]])
    # the constant third series has no scale: its weight 100 drops out, 1 and 3 share the total
    expected = (1 * np.sqrt(2 / (5 / 3)) + 3 * np.sqrt(2 / (8 / 3))) / 4
    scores = rmsse(actual, forecast, history)
    assert wrmsse(scores, np.array([1, 3, 100])) == pytest.approx(expected)
    with pytest.raises(ValueError, match="positive weight"):
        wrmsse(scores, np.array([0, 0, 100]))


def test_pinball_loss_at_q90_hand_computed():
    # errors 2, -2, 0 -> losses 0.9 * 2, 0.1 * 2, 0
    assert pinball_loss(np.array([10, 5, 0]), np.array([8, 7, 0]), 0.9) == pytest.approx(2 / 3)


def test_coverage_with_and_without_lower_bound():
    actual = np.array([1, 5, 9, 3])
    upper, lower = np.array([2, 5, 8, 4]), np.array([0, 6, 1, 1])
    assert coverage(actual, upper) == pytest.approx(3 / 4)  # 9 > 8
    assert coverage(actual, upper, lower) == pytest.approx(2 / 4)  # and 5 < 6
