"""The data contract: canonical form, and errors that say what is wrong, where and how often."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.contract import (
    TABLES,
    DataContractError,
    check_identities,
    check_references,
    conform,
)

SOURCE = "shop/sales.csv"


def _sales(**overrides) -> pd.DataFrame:
    """Three order lines with only the required columns, in the order a user file might have."""
    columns = {
        "net_sales": [4.0, 2.5, 6.0],
        "quantity": [2, 1, 3],
        "ts": ["2024-03-01 09:00:00", "2024-03-01 09:00:00", "2024-03-02 18:30:00"],
        "store_id": [1, 1, 2],
        "product_id": [100, 101, 100],
        "order_id": [10, 10, 11],
        "customer_id": [1, 1, 2],
    }
    return pd.DataFrame({**columns, **overrides})


def _error(frame: pd.DataFrame, table: str = "transactions") -> DataContractError:
    with pytest.raises(DataContractError) as caught:
        conform(frame, table, SOURCE)
    return caught.value


def test_conform_returns_canonical_columns_dtypes_and_optional_defaults():
    out = conform(_sales(), "transactions", SOURCE)

    assert list(out.columns) == TABLES["transactions"].column_names
    assert out.dtypes.astype(str).to_dict() == {
        "customer_id": "int64",
        "order_id": "int64",
        "product_id": "int64",
        "store_id": "int64",
        "channel": "object",
        "ts": "datetime64[ns]",
        "quantity": "float64",
        "net_sales": "float64",
        "discount": "float64",
    }
    assert out["channel"].tolist() == ["store"] * 3
    assert out["discount"].tolist() == [0.0] * 3
    assert out["quantity"].tolist() == [2.0, 1.0, 3.0]
    assert out["ts"].iloc[2] == pd.Timestamp("2024-03-02 18:30:00")


def test_conform_fills_defaults_of_absent_and_empty_optional_columns():
    products = conform(
        pd.DataFrame({"product_id": ["7", "8"], "price": [1.25, None]}), "products", SOURCE
    )
    assert products["product_id"].dtype == "int64"
    assert products["product_id"].tolist() == [7, 8]
    assert products["category"].tolist() == ["unknown", "unknown"]
    assert products["sold_in_units"].dtype == bool
    assert products["sold_in_units"].tolist() == [True, True]
    assert products["price"].iloc[0] == 1.25
    assert np.isnan(products["price"].iloc[1])

    customers = conform(
        pd.DataFrame({"customer_id": [1, 2, 3], "home_store_id": [5, None, 6]}),
        "customers",
        SOURCE,
    )
    assert str(customers["home_store_id"].dtype) == "Int64"  # optional id keeps its gap
    assert customers["home_store_id"].isna().tolist() == [False, True, False]
    assert customers["opt_out"].tolist() == [False, False, False]

    stores = conform(pd.DataFrame({"store_id": [3]}), "stores", SOURCE)
    assert stores.iloc[0].to_dict() == {"store_id": 3, "region": "unknown", "lead_time_days": 2}


def test_timestamps_in_mixed_formats_are_parsed():
    out = conform(
        _sales(ts=["2024-03-01 09:00:00", "2024-03-02", "2024-03-02T18:30"]), "transactions", SOURCE
    )
    assert out["ts"].tolist() == [
        pd.Timestamp("2024-03-01 09:00"),
        pd.Timestamp("2024-03-02 00:00"),
        pd.Timestamp("2024-03-02 18:30"),
    ]


def test_timezone_aware_timestamps_keep_their_local_time():
    stamps = pd.to_datetime(["2024-03-01 09:00", "2024-03-01 10:00", "2024-03-02 18:30"])
    out = conform(_sales(ts=stamps.tz_localize("Asia/Shanghai")), "transactions", SOURCE)
    assert out["ts"].dtype == "datetime64[ns]"
    assert out["ts"].tolist() == list(stamps)


def test_dates_are_normalised_to_midnight():
    promotions = pd.DataFrame(
        {
            "store_id": [1],
            "product_id": [100],
            "start_date": ["2024-03-04 13:00"],
            "end_date": ["2024-03-10"],
            "promo_type": ["mailer"],
        }
    )
    out = conform(promotions, "promotions", SOURCE)
    assert out["start_date"].tolist() == [pd.Timestamp("2024-03-04")]
    assert out["end_date"].tolist() == [pd.Timestamp("2024-03-10")]


def test_bool_spellings_are_parsed():
    out = conform(
        pd.DataFrame({"customer_id": [1, 2, 3, 4], "opt_out": ["yes", "No", "1", "FALSE"]}),
        "customers",
        SOURCE,
    )
    assert out["opt_out"].tolist() == [True, False, True, False]


@pytest.mark.parametrize(
    "spelled, canonical",
    [
        ("Mini-Program", "mini_program"),
        ("mini program", "mini_program"),
        (" WEB ", "web"),
        ("App", "app"),
        ("store", "store"),
    ],
)
def test_channel_spellings_are_normalised(spelled, canonical):
    out = conform(_sales(channel=[spelled, "store", spelled]), "transactions", SOURCE)
    assert out["channel"].tolist() == [canonical, "store", canonical]


def test_missing_required_column_names_source_and_column():
    error = _error(_sales().drop(columns=["ts"]))
    assert error.source == SOURCE
    assert error.column == "ts"
    assert SOURCE in str(error)
    assert "'ts'" in str(error)
    assert "missing required column" in str(error)


@pytest.mark.parametrize(
    "column, values, rows, says",
    [
        ("quantity", ["abc", 1, "x"], 2, "expected float values, got e.g. 'abc'"),
        ("product_id", [100, 1.5, 100], 1, "expected id values"),
        ("customer_id", ["c1", 1, 2], 1, "expected id values, got e.g. 'c1'"),
        ("ts", ["2024-03-01 09:00:00", "yesterday", "2024-03-02 18:30:00"], 1, "timestamp"),
    ],
)
def test_wrong_type_names_source_column_and_row_count(column, values, rows, says):
    error = _error(_sales(**{column: values}))
    assert (error.source, error.column, error.rows) == (SOURCE, column, rows)
    message = str(error)
    assert message.startswith(f"{SOURCE}, column '{column}': ")
    assert says in message
    assert message.endswith(f"({rows} rows)")


@pytest.mark.parametrize("column", ["quantity", "net_sales", "product_id", "ts"])
def test_nan_in_required_column_is_refused_with_count(column):
    frame = _sales()
    frame[column] = frame[column].astype(object)
    frame.loc[[0, 2], column] = None
    error = _error(frame)
    assert (error.column, error.rows) == (column, 2)
    assert "empty (NaN) values are not allowed" in str(error)
    assert SOURCE in str(error)


def test_negative_quantity_is_refused_with_count():
    error = _error(_sales(quantity=[-1, 2, -3]))
    assert (error.source, error.column, error.rows) == (SOURCE, "quantity", 2)
    assert str(error) == (
        f"{SOURCE}, column 'quantity': negative values are not allowed, "
        "e.g. -1.0 (row 2), -3.0 (row 4) (2 rows)"
    )


def test_every_problem_is_reported_on_one_line_the_first_in_contract_order_leading():
    frame = _sales(ts=["yesterday", "2024-03-01", None], quantity=[-1, 2, -3], net_sales=[1, 2, -4])
    error = _error(frame.drop(columns=["order_id"]))
    assert (error.column, error.rows) == ("order_id", None)
    message = str(error)
    assert "\n" not in message
    assert message.startswith(f"{SOURCE}, column 'order_id': missing required column(s)")
    assert (
        "; also column 'ts': expected timestamp values, got e.g. 'yesterday' (row 2) (1 rows)"
        in message
    )
    negative = "negative values are not allowed, e.g."
    assert f"; also column 'quantity': {negative} -1.0 (row 2)" in message
    assert f"; also column 'net_sales': {negative} -4.0 (row 4)" in message


def test_examples_are_the_first_three_rows_of_many():
    frame = pd.concat([_sales()] * 4, ignore_index=True)
    frame.loc[[1, 3, 5, 7, 9], "customer_id"] = None
    error = _error(frame)
    assert (error.column, error.rows) == ("customer_id", 5)
    assert str(error).endswith("empty (NaN) values are not allowed, e.g. rows 3, 5, 7 (5 rows)")


def test_conform_leaves_the_callers_frame_as_it_was():
    frame = _sales(channel=["Web", "store", "web"])
    before = frame.copy()
    conform(frame, "transactions", SOURCE)
    pd.testing.assert_frame_equal(frame, before)


def test_negative_optional_column_is_refused_too():
    error = _error(_sales(discount=[0.0, -0.5, 0.0]))
    assert (error.column, error.rows) == ("discount", 1)


def test_empty_frame_is_refused():
    error = _error(_sales().iloc[:0])
    assert error.source == SOURCE
    assert "is empty" in str(error)
    assert "'transactions'" in str(error)
    error = _error(pd.DataFrame(), "products")
    assert "is empty" in str(error)


def test_duplicate_product_keys_are_refused_with_count():
    frame = pd.DataFrame({"product_id": [1, 2, 1, 3, 1], "category": list("abcde")})
    error = _error(frame, "products")
    assert (error.source, error.column, error.rows) == (SOURCE, "product_id", 2)
    assert "duplicate keys" in str(error)


def test_repeated_ids_are_fine_in_a_table_without_key():
    out = conform(_sales(product_id=[100, 100, 100]), "transactions", SOURCE)
    assert len(out) == 3


def _dimension_tables() -> dict[str, pd.DataFrame]:
    return {
        "transactions": conform(_sales(), "transactions", "sales.csv"),
        "products": conform(pd.DataFrame({"product_id": [100, 101]}), "products", "p.csv"),
        "stores": conform(pd.DataFrame({"store_id": [1, 2]}), "stores", "s.csv"),
        "customers": conform(pd.DataFrame({"customer_id": [1, 2]}), "customers", "c.csv"),
    }


def test_check_references_passes_when_every_id_is_known():
    check_references(_dimension_tables())


@pytest.mark.parametrize(
    ("owner", "keep", "sources", "expected", "message", "missing_id"),
    [
        # product 100 goes missing: two lines refer to it
        (
            "products",
            [1],
            {"transactions": "sales.csv"},
            ("sales.csv", "product_id", 2),
            "unknown ids not in products",
            "[100]",
        ),
        # store 2 goes missing: one line
        ("stores", [0], None, ("transactions", "store_id", 1), "stores", "[2]"),
    ],
)
def test_check_references_reports_unknown_ids_with_count(
    owner, keep, sources, expected, message, missing_id
):
    tables = _dimension_tables()
    tables[owner] = tables[owner].iloc[keep]
    with pytest.raises(DataContractError) as caught:
        check_references(tables, sources)
    error = caught.value
    assert (error.source, error.column, error.rows) == expected
    assert message in str(error)
    assert missing_id in str(error)


def test_check_references_skips_owner_tables_that_are_absent():
    tables = _dimension_tables()
    del tables["stores"]
    tables["transactions"] = tables["transactions"].assign(store_id=99)
    check_references(tables)


def test_check_references_reports_every_column_with_unknown_ids_on_one_line():
    tables = _dimension_tables()
    tables["transactions"] = tables["transactions"].assign(
        store_id=[1, 7, 7], customer_id=[1, 9, 8]
    )
    with pytest.raises(DataContractError) as caught:
        check_references(tables, {"transactions": "sales.csv"})
    error = caught.value
    assert (error.source, error.column, error.rows) == ("sales.csv", "customer_id", 2)
    assert str(error) == (
        "sales.csv, column 'customer_id': unknown ids not in customers (e.g. [9, 8]) (2 rows); "
        "also column 'store_id': unknown ids not in stores (e.g. [7]) (2 rows)"
    )


def test_channel_identities_repeated_once_spellings_are_normalised_are_refused():
    identities = conform(
        pd.DataFrame(
            {
                "channel": ["Web", "web", "app", "web"],
                "channel_customer_id": ["w1", "w1", "a1", "w1"],
                "customer_id": [1, 1, 2, 1],
            }
        ),
        "identities",
        SOURCE,
    )
    with pytest.raises(DataContractError) as caught:
        check_identities(identities, SOURCE)
    error = caught.value
    assert (error.source, error.column, error.rows) == (SOURCE, "channel_customer_id", 2)
    assert "channel identities repeat, e.g. web:w1" in str(error)
    check_identities(identities.drop_duplicates(["channel", "channel_customer_id"]), SOURCE)
