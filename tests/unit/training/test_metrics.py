import numpy as np
import pytest

from training.metrics import (
    bias,
    coverage_at_k,
    hit_rate_at_k,
    map_at_k,
    ndcg_at_k,
    recall_at_k,
    wape,
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
