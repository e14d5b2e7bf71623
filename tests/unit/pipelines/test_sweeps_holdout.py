"""A forecaster sweep tunes on the data before the holdout; the holdout is scored after it."""

import pandas as pd
import pytest

from features import synthetic
from features.dataset import DatasetInfo
from features.engineering import EVENT_TIMESTAMP, PERIOD, demand_panel, store_product_features
from pipelines import steps, sweeps
from training.backtest import rolling_origins
from training.forecaster import HORIZON_PERIODS
from training.sweeps import forecaster_defaults

SHOP = synthetic.SyntheticConfig(
    n_customers=150, n_stores=2, n_products=12, n_categories=3, days=200, seed=3
)


@pytest.fixture(scope="module")
def forecast_data() -> steps.ForecastData:
    """The workspace's ForecastData, with the feature table Feast would serve read directly."""
    tables = synthetic.generate(SHOP)
    grid = pd.date_range(SHOP.start, periods=SHOP.days, freq="D")
    origins = rolling_origins(grid, 3, HORIZON_PERIODS["D"])
    panel = demand_panel(tables, "D", selected_before=origins)
    features = store_product_features(panel, "D", tables)
    keys = panel[["store_id", "product_id"]].drop_duplicates().reset_index(drop=True)
    info = DatasetInfo("synthetic", "D", SHOP.country, "", "", "", 0)
    return steps.ForecastData(info, tables, panel, keys, features, origins, [])


def test_sweep_trials_never_see_the_holdout_and_its_score_comes_after_them_no_leak(
    forecast_data, monkeypatch
):
    handed = []

    def recording_backtest(make, panel, features, freq, origins, promotions, calendar, **kw):
        handed.append((panel, features, promotions, list(origins)))
        result = real_backtest(make, panel, features, freq, origins, promotions, calendar, **kw)
        handed[-1] += (result.scored,)
        return result

    real_backtest = sweeps.backtest
    monkeypatch.setattr(sweeps, "backtest", recording_backtest)
    tuning = sweeps.forecaster_tuning_on(forecast_data, threads=1, register=lambda m, t: "1")
    holdout = forecast_data.holdout
    assert tuning.windows == 2 and tuning.tags["holdout"] == f"{holdout:%Y-%m-%d}"
    config = forecaster_defaults() | {"num_boost_round": 50}
    for step in range(tuning.windows):
        tuning.score(config, step)
    for panel, features, _, origins, scored in handed:
        assert panel[PERIOD].max() < holdout
        assert features[EVENT_TIMESTAMP].max() < holdout
        assert origins[0] < holdout and scored[PERIOD].max() < holdout
    tuned_origins = [origins[0] for *_, origins, _ in handed]
    assert tuned_origins == forecast_data.origins[:-1]

    tuning.holdout_score(config)
    *_, origins, scored = handed[-1]
    assert origins == [holdout]
    # Every scored row lies after every window the trials were tuned on.
    assert scored[PERIOD].min() >= holdout > max(tuned_origins)
    assert scored[PERIOD].max() == forecast_data.panel[PERIOD].max()
