import numpy as np
import pandas as pd

from training.promotion_breadth import BREADTH_HISTORY_DAYS, PromotionBreadth

WEEK = pd.Timedelta(days=7)
TARGET = pd.Timestamp("2024-07-01")  # a Monday
HISTORY_WEEKS = BREADTH_HISTORY_DAYS // 7
PRODUCTS = pd.DataFrame(
    {"product_id": [1, 2, 3, 4, 5, 6], "category": ["A", "A", "A", "B", "C", "unknown"]}
)
SERIES = pd.DataFrame({"store_id": [1, 1, 1, 2, 2], "product_id": [1, 4, 5, 1, 6]})


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
        # Usual at store 1: product 1 in every mailer, product 4 on display every other week.
        [promotion(1, week, "mailer") for week in history]
        + [promotion(4, week, "display") for week in history[::2]]
        # Target week: three of category A in the mailer (product 2 twice: it counts once),
        # products 3 and 4 on display; a store the series do not have is left out.
        + [promotion(product, TARGET, "mailer") for product in (1, 2, 2, 3)]
        + [promotion(product, TARGET, "display") for product in (3, 4)]
        + [promotion(1, TARGET, "display", store=9)]
        # Store 2: product 2 in the mailer, from mid-week before the target to mid-week in it.
        + [promotion(2, TARGET - pd.Timedelta(days=3), "mailer", store=2)]
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
    # Store 2: the straddling promotion counts in both weeks it touches, once each; the
    # placeholder category "unknown" is no category.
    store_2 = breadth.features(rows([1, 1, 6], [TARGET - WEEK, TARGET, TARGET], store=2))
    assert store_2["category_promotions"].tolist()[:2] == [1.0, 1.0]
    assert np.isnan(store_2["category_promotions"].iloc[2])
    assert store_2["mailer_breadth"].notna().all()


def test_the_usual_covers_only_the_weeks_the_table_covers():
    # Ten products in every mailer since the table begins, two weeks before the target.
    weeks = [TARGET - 2 * WEEK, TARGET - WEEK, TARGET]
    promotions = pd.DataFrame(
        [promotion(product, week, "mailer") for week in weeks for product in range(10, 20)]
    )
    breadth = PromotionBreadth(promotions, PRODUCTS, "W", SERIES, TARGET - 2 * WEEK, TARGET)
    got = breadth.features(rows([1, 1, 1], weeks))
    # No week before the first: no usual. Then a steady mailer reads as usual, not as 13x.
    assert np.isnan(got["mailer_breadth"].iloc[0])
    np.testing.assert_allclose(got["mailer_breadth"].iloc[1:], 1.0)


def test_what_was_not_built_is_missing():
    promotions = pd.DataFrame(
        [promotion(1, TARGET - WEEK, "mailer"), promotion(1, TARGET, "mailer")]
    )
    breadth = PromotionBreadth(promotions, PRODUCTS, "W", SERIES, TARGET, TARGET + WEEK)
    outside = pd.concat(
        [rows([1], store=9), rows([1], TARGET - 27 * WEEK), rows([1], TARGET + 2 * WEEK)]
        + [rows([99])]
    )
    got = breadth.features(outside.reset_index(drop=True))
    assert got.iloc[:3].isna().all(axis=None)  # unknown store, before the history, after the last
    assert got.loc[3, ["mailer_breadth", "display_breadth"]].notna().all()
    assert got.loc[3, ["category_promotions", "category_promotion_breadth"]].isna().all()


def test_a_what_if_adds_its_products_to_the_counts_only():
    promotions = pd.DataFrame(
        [promotion(1, TARGET - WEEK, "mailer"), promotion(1, TARGET, "mailer")]
    )
    breadth = PromotionBreadth(promotions, PRODUCTS, "W", SERIES, TARGET, TARGET + WEEK)
    added = breadth.with_added(pd.DataFrame([promotion(4, TARGET, "mailer")]))
    before, after = breadth.features(rows([1, 4])), added.features(rows([1, 4]))
    np.testing.assert_allclose(before["mailer_breadth"], (1 + 1) / (1 + 1))
    np.testing.assert_allclose(after["mailer_breadth"], (2 + 1) / (1 + 1))
    np.testing.assert_allclose(after["category_promotions"], [1, 1])  # B gains product 4
    # The plan itself is untouched, and the week after keeps its usual.
    np.testing.assert_allclose(breadth.features(rows([4]))["category_promotions"], 0)
    pd.testing.assert_frame_equal(
        added.features(rows([1], TARGET + WEEK)), breadth.features(rows([1], TARGET + WEEK))
    )


def test_a_promotion_counts_in_every_day_it_covers():
    promotions = pd.DataFrame([promotion(1, TARGET, "mailer", days=3)])
    days = pd.date_range(TARGET - pd.Timedelta(days=1), periods=5, freq="D")
    breadth = PromotionBreadth(promotions, PRODUCTS, "D", SERIES, days[0], days[-1])
    got = breadth.features(pd.concat([rows([1], day) for day in days], ignore_index=True))
    np.testing.assert_allclose(got["category_promotions"], [0, 1, 1, 1, 0])
    # Usual: none before the table begins, then the mean of the covered days before.
    assert np.isnan(got["mailer_breadth"].iloc[0]) and np.isnan(got["mailer_breadth"].iloc[1])
    np.testing.assert_allclose(got["mailer_breadth"].iloc[2:], [2 / 2, 2 / 2, 1 / (1 + 1)])


def test_a_build_covers_the_stores_products_and_periods_it_counted_on_its_grid():
    breadth = PromotionBreadth(None, PRODUCTS, "W", SERIES, TARGET, TARGET + 4 * WEEK)
    assert breadth.covers("W", SERIES, TARGET, TARGET + 4 * WEEK)
    assert not breadth.covers("D", SERIES, TARGET, TARGET + 4 * WEEK)  # weekly counts, daily rows
    assert breadth.covers("W", SERIES.iloc[:2], TARGET + WEEK, TARGET + 2 * WEEK)
    assert not breadth.covers("W", SERIES, TARGET - WEEK, TARGET)  # before its first period
    assert not breadth.covers("W", SERIES, TARGET, TARGET + 5 * WEEK)  # after its last
    assert not breadth.covers("W", SERIES, TARGET + pd.Timedelta(days=3), TARGET + WEEK)  # off grid
    other_store = pd.DataFrame({"store_id": [3], "product_id": [1]})
    other_product = pd.DataFrame({"store_id": [1], "product_id": [2]})
    assert not breadth.covers("W", other_store, TARGET, TARGET)
    assert not breadth.covers("W", other_product, TARGET, TARGET)
