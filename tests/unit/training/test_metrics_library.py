"""Our forecast metrics against utilsforecast's losses called directly on the same arrays."""

import numpy as np
import pandas as pd
import pytest
from utilsforecast import losses

from training.metrics import coverage, pinball_loss, rmsse, wape

RNG = np.random.default_rng(7)
HISTORY = RNG.poisson(3.0, (6, 30)).astype(float)
HISTORY[2] = 4.0  # a constant history: no scale
ACTUAL = RNG.poisson(3.0, (6, 5)).astype(float)
FORECAST = ACTUAL + RNG.normal(0, 1.5, ACTUAL.shape)


def long_frame(actual: np.ndarray, **predictions: np.ndarray) -> pd.DataFrame:
    """One row per series (row of the arrays) and step, as utilsforecast reads forecasts."""
    n_series, n_steps = np.atleast_2d(actual).shape
    return pd.DataFrame(
        {
            "unique_id": np.repeat(np.arange(n_series), n_steps),
            "ds": np.tile(np.arange(n_steps), n_series),
            "y": np.ravel(actual),
            **{name: np.ravel(values) for name, values in predictions.items()},
        }
    )


def test_wape_pooled_over_series_equals_utilsforecast_on_one_id():
    frame = long_frame(ACTUAL, model=FORECAST).assign(unique_id=0)
    expected = losses.wape(frame, ["model"])["model"].item()
    assert wape(ACTUAL, FORECAST) == pytest.approx(expected, rel=1e-12)


def test_rmsse_per_series_equals_utilsforecast_with_a_one_period_naive_scale():
    train = long_frame(HISTORY)
    got = rmsse(ACTUAL, FORECAST, HISTORY)
    expected = (
        losses.rmsse(long_frame(ACTUAL, model=FORECAST), ["model"], 1, train)
        .set_index("unique_id")["model"]
        .sort_index()
        .to_numpy()
    )
    scaled = np.isfinite(expected)
    assert scaled.tolist() == [True, True, False, True, True, True]  # the constant series
    assert np.isnan(got[~scaled]).all()
    assert got[scaled] == pytest.approx(expected[scaled], rel=1e-12)


@pytest.mark.parametrize("q", [0.1, 0.5, 0.9])
def test_pinball_loss_equals_utilsforecast_quantile_loss(q):
    frame = long_frame(ACTUAL, model=FORECAST).assign(unique_id=0)
    expected = losses.quantile_loss(frame, {"model": "model"}, q=q)["model"].item()
    assert pinball_loss(ACTUAL.ravel(), FORECAST.ravel(), q) == pytest.approx(expected)


def test_coverage_equals_utilsforecast_with_bounds_included():
    upper, lower = np.round(FORECAST + 1), np.round(FORECAST - 1)  # ties with the actuals
    frame = long_frame(ACTUAL, **{"m-lo-80": lower, "m-hi-80": upper}).assign(unique_id=0)
    assert coverage(ACTUAL, upper, lower) == losses.coverage(frame, ["m"], 80)["m"].item()
    frame["m-lo-80"] = -np.inf
    assert coverage(ACTUAL, upper) == losses.coverage(frame, ["m"], 80)["m"].item()
