from pipelines.steps import origin_stride


def test_origin_stride_caps_rows_and_skips_multiples_of_seven():
    assert origin_stride(100, 50, 4) == 1
    stride = origin_stride(2345, 364, 28)
    assert 2345 * (364 / stride) * 28 <= 2_000_000 * 1.1
    assert stride % 7 != 0
    assert origin_stride(7_000_000, 1, 1) == 4  # ceil(3.5) = 4
    assert origin_stride(14_000_000, 1, 1) == 8  # 7 would repeat the weekday
