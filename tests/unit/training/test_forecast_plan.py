import datetime as dt

import numpy as np
import pandas as pd
import pytest

from training.forecast_plan import ForecastPlan, origin_stamp, read_plan

NEWEST = pd.Timestamp("2024-04-30")  # stamp of the newest features: data up to April 29th
START = pd.Timestamp("2024-01-01")  # a Monday


def test_the_origin_is_the_newest_day_unless_as_of_names_an_earlier_one():
    assert origin_stamp(None, NEWEST, START, "D") == NEWEST
    assert origin_stamp(dt.date(2024, 4, 29), NEWEST, START, "D") == NEWEST
    assert origin_stamp(dt.date(2024, 4, 1), NEWEST, START, "D") == pd.Timestamp("2024-04-02")
    # Weekly stamps are Mondays: the last whole week ending by as_of (Wednesday April 3rd).
    weekly = origin_stamp(dt.date(2024, 4, 3), pd.Timestamp("2024-04-29"), START, "W")
    assert weekly == pd.Timestamp("2024-04-01")
    assert origin_stamp(dt.date(2024, 3, 31), pd.Timestamp("2024-04-29"), START, "W") == weekly


@pytest.mark.parametrize(
    ("as_of", "freq", "message"),
    [
        (dt.date(2024, 4, 30), "D", "after the newest data day 2024-04-29"),
        (dt.date(2023, 12, 31), "D", "before the end of the model's first period 2024-01-01"),
        (dt.date(2024, 1, 6), "W", "before the end of the model's first period 2024-01-07"),
    ],
)
def test_an_as_of_outside_the_data_is_refused_by_name(as_of, freq, message):
    with pytest.raises(ValueError, match=f"as_of {as_of:%Y-%m-%d} is {message}"):
        origin_stamp(as_of, NEWEST, START, freq)


def test_the_plan_is_read_from_the_tables_as_they_are_now(tmp_path):
    promotions = pd.DataFrame(
        {
            "store_id": [1, 1, 2],
            "product_id": [10, 11, 12],
            "start_date": pd.to_datetime(["2024-05-01"] * 3),
            "end_date": pd.to_datetime(["2024-05-07"] * 3),
            "promo_type": "display",
        }
    )
    promotions.to_parquet(tmp_path / "promotions.parquet")
    plan = read_plan(tmp_path, np.array([10, 12, 12]), "US")
    assert plan.promotions["product_id"].tolist() == [10, 12]
    assert plan.calendar is None and plan.country == "US"
    calendar = pd.DataFrame({"date": pd.to_datetime(["2024-05-02"]), "is_holiday": [True]})
    calendar.to_parquet(tmp_path / "calendar.parquet")
    known = read_plan(tmp_path, np.array([10]), "US")
    assert pd.Timestamp("2024-05-02") in known.holiday_days(START, NEWEST + pd.Timedelta(days=9))
    assert read_plan(tmp_path / "absent", np.array([10]), "US") == ForecastPlan(country="US")
