import pandas as pd

from pipelines.steps import active_before, origin_stride


def test_series_are_chosen_without_looking_at_the_holdout():
    periods = pd.date_range("2024-01-01", periods=8, freq="7D")
    cutoff = periods[4]
    sells_before = [1, 1, 0, 1, 0, 0, 0, 0]  # 3 of the 4 weeks before the cutoff
    sells_after = [0, 0, 0, 0, 5, 5, 5, 5]  # active overall (4 of 8), but only in the holdout
    panel = pd.concat(
        [
            pd.DataFrame({"store_id": 1, "product_id": p, "period": periods, "units": units})
            for p, units in ((1, sells_before), (2, sells_after))
        ]
    )
    kept = active_before(panel, cutoff)
    assert set(kept["product_id"]) == {1}
    assert len(kept) == 8  # whole series kept, holdout periods included


def test_origin_stride_caps_rows_and_skips_multiples_of_seven():
    assert origin_stride(100, 50, 4) == 1
    stride = origin_stride(2345, 364, 28)
    assert 2345 * (364 / stride) * 28 <= 2_000_000 * 1.1
    assert stride % 7 != 0
    assert origin_stride(7_000_000, 1, 1) == 4  # ceil(3.5) = 4
    assert origin_stride(14_000_000, 1, 1) == 8  # 7 would repeat the weekday
