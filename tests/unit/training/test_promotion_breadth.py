import numpy as np
import pandas as pd

from training.promotion_breadth import BREADTH_HISTORY_DAYS, PromotionBreadth

WEEK = pd.Timedelta(days=7)
TARGET = pd.Timestamp("2024-07-01")  # a Monday
HISTORY_WEEKS = BREADTH_HISTORY_DAYS // 7
PRODUCTS = pd.DataFrame({"product_id": [1, 2, 3, 4, 5], "category": ["A", "A", "A", "B", "C"]})
SERIES = pd.DataFrame({"store_id": [1, 1, 1], "product_id": [1, 4, 5]})


def promotion(product: int, start: pd.Timestamp, kind: str, days: int = 7, store: int = 1):
    return {
        "store_id": store,
        "product_id": product,
        "start_date": start,
        "end_date": start + pd.Timedelta(days=days - 1),
        "promo_type": kind,
        "price": np.nan,
    }


def rows(products, period=TARGET, store=1) -> pd.DataFrame:
    return pd.DataFrame({"store_id": store, "product_id": products, "period": period})


def test_counts_against_the_usual_by_hand():
    history = [TARGET - WEEK * (i + 1) for i in range(HISTORY_WEEKS)]
    promotions = pd.DataFrame(
        # Usual: product 1 in every mailer, product 4 on display every other week.
        [promotion(1, week, "mailer") for week in history]
        + [promotion(4, week, "display") for week in history[::2]]
        # Target week: three of category A in the mailer (product 2 twice: it counts once),
        # products 3 and 4 on display; a store the series do not have is left out.
        + [promotion(product, TARGET, "mailer") for product in (1, 2, 2, 3)]
        + [promotion(product, TARGET, "display") for product in (3, 4)]
        + [promotion(1, TARGET, "display", store=9)]
    ).astype({"promo_type": "category"})
    breadth = PromotionBreadth(promotions, PRODUCTS, "W", SERIES, TARGET, TARGET + WEEK)
    got = breadth.features(rows([1, 4, 5]))
    usual_display = (HISTORY_WEEKS / 2) / HISTORY_WEEKS
    np.testing.assert_allclose(got["mailer_breadth"], (3 + 1) / (1 + 1))
    np.testing.assert_allclose(got["display_breadth"], (2 + 1) / (usual_display + 1))
    # Category A: products 1, 2, 3 on some promotion, against one a week; B: product 4 every
    # other week; C: never.
    np.testing.assert_allclose(got["category_promotions"], [3, 1, 0])
    np.testing.assert_allclose(
        got["category_promotion_breadth"],
        [(3 + 1) / (1 + 1), (1 + 1) / (usual_display + 1), (0 + 1) / (0 + 1)],
    )
    # The week after: no promotion at all, against a usual that now holds the target week.
    after = breadth.features(rows([1], TARGET + WEEK))
    usual_mailer = (HISTORY_WEEKS - 1 + 3) / HISTORY_WEEKS
    np.testing.assert_allclose(after["mailer_breadth"], 1 / (usual_mailer + 1))


def test_what_was_not_built_is_missing_and_since_keeps_the_later_periods():
    promotions = pd.DataFrame([promotion(1, TARGET, "mailer")])
    breadth = PromotionBreadth(promotions, PRODUCTS, "W", SERIES, TARGET, TARGET + WEEK)
    outside = pd.concat(
        [rows([1], store=9), rows([1], TARGET - WEEK), rows([1], TARGET + 2 * WEEK), rows([99])]
    )
    got = breadth.features(outside.reset_index(drop=True))
    assert got.iloc[:3].isna().all(axis=None)  # unknown store, before the first, after the last
    assert got.loc[3, ["mailer_breadth", "display_breadth"]].notna().all()
    assert got.loc[3, ["category_promotions", "category_promotion_breadth"]].isna().all()
    later = rows([1, 4], TARGET + WEEK)
    kept = breadth.since(TARGET + WEEK)
    pd.testing.assert_frame_equal(kept.features(later), breadth.features(later))
    assert kept.features(rows([1])).isna().all(axis=None)
    assert kept.category_count.shape[1] == 1


def test_a_promotion_counts_in_every_day_it_covers():
    promotions = pd.DataFrame([promotion(1, TARGET, "mailer", days=3)])
    days = pd.date_range(TARGET - pd.Timedelta(days=1), periods=5, freq="D")
    breadth = PromotionBreadth(promotions, PRODUCTS, "D", SERIES, days[0], days[-1])
    got = breadth.features(pd.concat([rows([1], day) for day in days], ignore_index=True))
    # The day before: none, as usual (1); then three days of one product; then none.
    np.testing.assert_allclose(got["category_promotions"], [0, 1, 1, 1, 0])
    assert got["mailer_breadth"].iloc[0] == 1.0
    assert (got["mailer_breadth"].iloc[1:4] > 1).all() and got["mailer_breadth"].iloc[4] < 1
