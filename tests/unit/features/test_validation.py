"""pandera's validation of the contract decides as the home-made checks it replaced did.

Commit 21c2f5d ran both on these files and found the same decisions, columns, row counts and
frames; the refusals below are the home-made checks' answers, kept as the expected ones.
"""

from __future__ import annotations

import io

import pandas as pd
import pytest

from features.contract import TABLES, DataContractError, conform

SOURCE = "shop/file.csv"
SALES = (
    "customer_id,order_id,product_id,store_id,ts,quantity,net_sales\n"
    "1,10,100,1,2024-03-01 09:00:00,2,4.0\n"
    "1,10,101,1,2024-03-01 09:00:00,1,2.5\n"
    "2,11,100,2,2024-03-02 18:30:00,3,6.0\n"
)


def _sales(old: str, new: str) -> str:
    return SALES.replace(old, new)


# (table, CSV text): good files, then bad ones, each bad in one way or several.
FILES = {
    "sales-good": ("transactions", SALES),
    "sales-optional-columns": (
        "transactions",
        SALES.replace("net_sales\n", "net_sales,channel,discount\n", 1)
        .replace(",4.0\n", ",4.0,web,0.5\n")
        .replace(",2.5\n", ",2.5,,\n")
        .replace(",6.0\n", ",6.0,store,0\n"),
    ),
    "sales-mixed-timestamps": ("transactions", _sales("2024-03-02 18:30:00", "2024-03-02")),
    "sales-timezone": ("transactions", _sales("2024-03-01 09:00:00", "2024-03-01T09:00+08:00")),
    "sales-float-ids": ("transactions", _sales(",100,1,", ",100.0,1,")),
    "sales-header-only": ("transactions", SALES.splitlines()[0] + "\n"),
    "sales-missing-ts": ("transactions", SALES.replace(",ts,", ",when,", 1)),
    "sales-missing-two": ("transactions", SALES.replace(",ts,quantity,", ",when,units,", 1)),
    "sales-text-quantity": ("transactions", _sales(",1,2.5", ",one,2.5")),
    "sales-fractional-id": ("transactions", _sales(",101,1,", ",101.5,1,")),
    "sales-text-customer": ("transactions", _sales("2,11,", "c2,11,")),
    "sales-bad-ts": ("transactions", _sales("2024-03-02 18:30:00", "yesterday")),
    "sales-empty-quantity": ("transactions", _sales(",3,6.0", ",,6.0")),
    "sales-empty-id": ("transactions", _sales(",101,1,", ",,1,")),
    "sales-empty-ts": ("transactions", _sales("2024-03-02 18:30:00", "")),
    "sales-negative": ("transactions", _sales(",2,4.0", ",-2,4.0").replace(",3,6.0", ",-3,6.0")),
    "sales-negative-sales": ("transactions", _sales(",2.5", ",-2.5")),
    "sales-several": (
        "transactions",
        _sales(",2,4.0", ",-2,4.0").replace("2024-03-02 18:30:00", "yesterday"),
    ),
    "products-good": (
        "products",
        "product_id,category,price,sold_in_units,pack_size\n1,milk,1.5,yes,6\n2,,,No,\n",
    ),
    "products-duplicate-keys": ("products", "product_id,category\n1,a\n2,b\n1,c\n3,d\n1,e\n"),
    "products-text-price": ("products", "product_id,price\n1,1.5\n2,cheap\n"),
    "products-bad-bool": ("products", "product_id,sold_in_units\n1,yes\n2,maybe\n"),
    "products-negative-pack": ("products", "product_id,pack_size\n1,-6\n2,6\n"),
    "customers-gap-in-home-store": ("customers", "customer_id,home_store_id\n1,5\n2,\n3,6\n"),
    "customers-text-home-store": ("customers", "customer_id,home_store_id\n1,5\n2,main\n"),
    "promotions-good": (
        "promotions",
        "store_id,product_id,start_date,end_date,promo_type\n1,100,2024-03-04 13:00,2024-03-10,\n",
    ),
    "promotions-missing-end": (
        "promotions",
        "store_id,product_id,start_date,promo_type\n1,100,2024-03-04,mailer\n",
    ),
    "calendar-bad-date": ("calendar", "date,is_holiday\n2024-01-01,true\n2024-13-45,false\n"),
}


# case -> (column, rows) of the refusal; None: accepted
DECISIONS = {
    "sales-good": None,
    "sales-optional-columns": None,
    "sales-mixed-timestamps": None,
    "sales-timezone": None,
    "sales-float-ids": None,
    "sales-header-only": (None, None),
    "sales-missing-ts": ("ts", None),
    "sales-missing-two": ("ts", None),
    "sales-text-quantity": ("quantity", 1),
    "sales-fractional-id": ("product_id", 1),
    "sales-text-customer": ("customer_id", 1),
    "sales-bad-ts": ("ts", 1),
    "sales-empty-quantity": ("quantity", 1),
    "sales-empty-id": ("product_id", 1),
    "sales-empty-ts": ("ts", 1),
    "sales-negative": ("quantity", 2),
    "sales-negative-sales": ("net_sales", 1),
    "sales-several": ("ts", 1),
    "products-good": None,
    "products-duplicate-keys": ("product_id", 2),
    "products-text-price": ("price", 1),
    "products-bad-bool": ("sold_in_units", 1),
    "products-negative-pack": ("pack_size", 1),
    "customers-gap-in-home-store": None,
    "customers-text-home-store": ("home_store_id", 1),
    "promotions-good": None,
    "promotions-missing-end": ("end_date", None),
    "calendar-bad-date": ("date", 1),
}


@pytest.mark.parametrize("case", FILES)
def test_pandera_decides_as_the_home_made_checks_did(case):
    table, text = FILES[case]
    frame = pd.read_csv(io.StringIO(text), low_memory=False)

    if DECISIONS[case] is None:
        out = conform(frame, table, SOURCE)
        assert list(out.columns) == TABLES[table].column_names
        assert len(out) == len(frame)
        return
    with pytest.raises(DataContractError) as caught:
        conform(frame, table, SOURCE)
    error = caught.value
    assert (error.source, error.column, error.rows) == (SOURCE, *DECISIONS[case])
    assert "Traceback" not in str(error) and "pandera" not in str(error)
