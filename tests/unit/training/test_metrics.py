import numpy as np
import pytest

from training.metrics import bias, ndcg_at_k, recall_at_k, wape


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
