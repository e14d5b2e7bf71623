"""Importing a user's CSV/parquet files through a TOML mapping, and the errors a user sees."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from features.contract import TABLES, DataContractError
from features.importer import import_tables

OMNISHELF = Path(sys.executable).parent / "omnishelf"
SALES_HEADER = "Customer,Invoice,SKU,Shop,When,Qty,Amount\n"
SALES_ROWS = (
    "1,10,100,1,2017-07-03 09:00:00,2,4.0\n"
    "1,10,101,1,2017-07-03 09:00:00,1,2.5\n"
    "2,11,100,2,2017-07-05 12:30:00,3,6.0\n"
)
SALES_COLUMNS = """\
[transactions.columns]
customer_id = "Customer"
order_id = "Invoice"
product_id = "SKU"
store_id = "Shop"
ts = "When"
quantity = "Qty"
net_sales = "Amount"
"""


def _mapping(folder: Path, extra: str = "", sales: str = "sales.csv", head: str = "") -> Path:
    path = folder / "shop.toml"
    path.write_text(f'{head}\n[transactions]\npath = "{sales}"\n{SALES_COLUMNS}\n{extra}')
    return path


def _import_error(mapping: Path) -> DataContractError:
    with pytest.raises(DataContractError) as caught:
        import_tables(mapping)
    return caught.value


@pytest.fixture
def sales_csv(tmp_path: Path) -> Path:
    path = tmp_path / "sales.csv"
    path.write_text(SALES_HEADER + SALES_ROWS)
    return path


def test_good_import_renames_columns_and_derives_dimension_tables(tmp_path, sales_csv):
    mapping = _mapping(tmp_path, head='name = "my_shop"\nfreq = "W"')

    tables, options = import_tables(mapping)

    assert options == {"name": "my_shop", "freq": "W", "country": "US"}
    required = {name for name, spec in TABLES.items() if spec.required}
    assert required <= set(tables)
    assert {"transactions", "products", "stores", "customers", "calendar"} <= set(tables)
    for name, frame in tables.items():
        assert list(frame.columns) == TABLES[name].column_names, name
    sales = tables["transactions"]
    assert sales["customer_id"].tolist() == [1, 1, 2]
    assert sales["order_id"].tolist() == [10, 10, 11]
    assert sales["quantity"].tolist() == [2.0, 1.0, 3.0]
    assert sales["ts"].tolist() == [
        pd.Timestamp("2017-07-03 09:00"),
        pd.Timestamp("2017-07-03 09:00"),
        pd.Timestamp("2017-07-05 12:30"),
    ]
    assert sales["channel"].tolist() == ["store"] * 3
    assert sorted(tables["products"]["product_id"]) == [100, 101]
    assert sorted(tables["stores"]["store_id"]) == [1, 2]
    customers = tables["customers"].set_index("customer_id")["home_store_id"].to_dict()
    assert customers == {1: 1, 2: 2}
    calendar = tables["calendar"]
    assert calendar["date"].tolist() == list(pd.date_range("2017-07-03", "2017-07-05"))
    assert calendar["is_holiday"].tolist() == [False, True, False]  # Independence Day


def test_defaults_name_from_the_mapping_file_and_daily_freq(tmp_path, sales_csv):
    _, options = import_tables(_mapping(tmp_path))
    assert options == {"name": "shop", "freq": "D", "country": "US"}


def test_parquet_sources_and_a_products_file_are_read(tmp_path):
    pd.DataFrame(
        {
            "Customer": [1, 2],
            "Invoice": [10, 11],
            "SKU": [100, 101],
            "Shop": [1, 1],
            "When": pd.to_datetime(["2017-07-03 09:00", "2017-07-04 10:00"]),
            "Qty": [1.0, 2.0],
            "Amount": [2.0, 5.0],
        }
    ).to_parquet(tmp_path / "sales.parquet")
    pd.DataFrame(
        {"SKU": [100, 101, 102], "Category": ["milk", "bread", "fuel"], "Units": [1, 1, 0]}
    ).to_parquet(tmp_path / "catalogue.parquet")
    extra = (
        '[products]\npath = "catalogue.parquet"\n'
        '[products.columns]\nproduct_id = "SKU"\ncategory = "Category"\nsold_in_units = "Units"\n'
    )
    tables, _ = import_tables(_mapping(tmp_path, extra, sales="sales.parquet"))
    products = tables["products"]
    assert products["product_id"].tolist() == [100, 101, 102]
    assert products["category"].tolist() == ["milk", "bread", "fuel"]
    assert products["sold_in_units"].tolist() == [True, True, False]
    assert tables["transactions"]["net_sales"].tolist() == [2.0, 5.0]


def test_missing_mapped_column_names_file_and_column(tmp_path):
    (tmp_path / "sales.csv").write_text(SALES_HEADER.replace("Qty", "Units") + SALES_ROWS)
    error = _import_error(_mapping(tmp_path))
    path = str((tmp_path / "sales.csv").resolve())
    assert error.source == path
    assert error.column == "Qty"
    assert str(error).startswith(f"{path}, column 'Qty': mapped column(s) ['Qty'] not in the file")
    assert "Units" in str(error)  # what the file does have


@pytest.mark.parametrize(
    "rows, says, count",
    [
        (SALES_ROWS.replace(",2,4.0", ",-2,4.0").replace(",3,6.0", ",-3,6.0"), "negative", 2),
        (SALES_ROWS.replace(",3,6.0", ",,6.0"), "empty (NaN)", 1),
        (SALES_ROWS.replace(",1,2.5", ",one,2.5"), "expected float values, got e.g. 'one'", 1),
    ],
    ids=["negative", "nan", "not-a-number"],
)
def test_bad_quantities_name_file_column_and_rows(tmp_path, rows, says, count):
    (tmp_path / "sales.csv").write_text(SALES_HEADER + rows)
    error = _import_error(_mapping(tmp_path))
    path = str((tmp_path / "sales.csv").resolve())
    assert (error.source, error.column, error.rows) == (path, "quantity", count)
    message = str(error)
    assert message.startswith(f"{path}, column 'quantity': ")
    assert says in message
    assert message.endswith(f"({count} rows)")


def test_empty_file_is_refused(tmp_path):
    (tmp_path / "sales.csv").write_bytes(b"")
    error = _import_error(_mapping(tmp_path))
    assert error.source == str((tmp_path / "sales.csv").resolve())
    assert "file is empty" in str(error)


def test_header_only_csv_is_refused(tmp_path):
    (tmp_path / "sales.csv").write_text(SALES_HEADER)
    error = _import_error(_mapping(tmp_path))
    assert error.source == str((tmp_path / "sales.csv").resolve())
    assert "is empty" in str(error)
    assert "'transactions'" in str(error)


def test_unknown_product_ids_are_reported_against_the_sales_file(tmp_path, sales_csv):
    (tmp_path / "products.csv").write_text("SKU,Category\n100,milk\n")  # 101 is not listed
    extra = '[products]\npath = "products.csv"\n[products.columns]\nproduct_id = "SKU"\n'
    error = _import_error(_mapping(tmp_path, extra))
    assert (error.source, error.column, error.rows) == (str(sales_csv.resolve()), "product_id", 1)
    assert "unknown ids not in products (e.g. [101])" in str(error)


def test_missing_data_file_is_named(tmp_path):
    error = _import_error(_mapping(tmp_path, sales="nowhere.csv"))
    assert error.source == str((tmp_path / "nowhere.csv").resolve())
    assert "file not found" in str(error)


def test_missing_mapping_file_is_named(tmp_path):
    error = _import_error(tmp_path / "absent.toml")
    assert error.source == str(tmp_path / "absent.toml")
    assert "mapping file not found" in str(error)


def test_invalid_toml_is_refused(tmp_path):
    mapping = tmp_path / "shop.toml"
    mapping.write_text('[transactions\npath = "sales.csv"\n')
    error = _import_error(mapping)
    assert error.source == str(mapping)
    assert "is not valid TOML" in str(error)


def test_unknown_table_section_is_refused(tmp_path, sales_csv):
    mapping = _mapping(tmp_path, '[sales_targets]\npath = "sales.csv"\n')
    error = _import_error(mapping)
    assert error.source == str(mapping)
    assert "unknown table section(s) ['sales_targets']" in str(error)


def test_mapping_without_transactions_is_refused(tmp_path, sales_csv):
    mapping = tmp_path / "shop.toml"
    mapping.write_text('[products]\npath = "sales.csv"\n')
    assert "needs one [transactions] section" in str(_import_error(mapping))


def test_section_without_path_is_refused(tmp_path, sales_csv):
    error = _import_error(_mapping(tmp_path, '[stores]\n[stores.columns]\nstore_id = "Shop"\n'))
    assert "section [stores] needs a path" in str(error)


@pytest.mark.parametrize("freq", ["M", "weekly", "d"])
def test_bad_freq_is_refused(tmp_path, sales_csv, freq):
    mapping = _mapping(tmp_path, head=f'freq = "{freq}"')
    error = _import_error(mapping)
    assert (error.source, error.column) == (str(mapping), "freq")
    assert "freq must be one of ('D', 'W')" in str(error)


def _cli(mapping: Path, home: Path) -> subprocess.CompletedProcess:
    # A wide console: rich wraps lines at 80 columns when output is not a terminal.
    env = {**os.environ, "OMNISHELF_HOME": str(home), "COLUMNS": "400", "NO_COLOR": "1"}
    return subprocess.run(
        [str(OMNISHELF), "import", str(mapping)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_import_error_exits_2_with_one_clear_line_and_writes_nothing(tmp_path):
    (tmp_path / "sales.csv").write_text(SALES_HEADER + SALES_ROWS.replace(",3,6.0", ",-3,6.0"))
    done = _cli(_mapping(tmp_path), tmp_path)

    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert "Traceback" not in output
    assert str((tmp_path / "sales.csv").resolve()) in done.stdout
    assert "column 'quantity'" in done.stdout
    assert "negative values are not allowed, e.g. -3.0 (row 4) (1 rows)" in done.stdout
    data = tmp_path / "data"
    leftovers = list(data.rglob("*")) if data.exists() else []
    assert leftovers == []


def test_cli_import_success_writes_the_dataset(tmp_path, sales_csv):
    done = _cli(_mapping(tmp_path), tmp_path)

    assert done.returncode == 0, done.stdout + done.stderr
    tables = tmp_path / "data" / "tables"
    assert (tables / "dataset.json").exists()
    assert (tables / "transactions.parquet").exists()
    assert [p.name for p in tables.parent.iterdir()] == ["tables"]  # no staging folder left


IDENTITIES_MAPPING = """\
[identities]
path = "identities.csv"
[identities.columns]
channel = "Channel"
channel_customer_id = "Account"
customer_id = "Customer"
phone = "Phone"
email = "Email"
"""


def _identities_csv(folder: Path) -> None:
    (folder / "identities.csv").write_text(
        "Channel,Account,Customer,Phone,Email\n"
        "store,LC-1,1,+1 (555) 010-2000,ann@example.com\n"
        "web,w-77,2,15550102000, Ann@Example.com\n"
        "app,a-3,2,,bob@example.com\n"  # a gap must not turn the phones into floats
    )


def test_raw_phones_and_emails_are_hashed_with_the_salt_at_import(tmp_path, sales_csv):
    _identities_csv(tmp_path)
    tables, _ = import_tables(_mapping(tmp_path, IDENTITIES_MAPPING), salt="s3cret")

    identities = tables["identities"]
    assert "phone" not in identities and "email" not in identities
    phones, emails = identities["phone_hash"], identities["email_hash"]
    assert phones[0] == phones[1] != "" and phones[2] == ""  # same number, two spellings
    assert emails[0] == emails[1] != emails[2]
    stored = identities.astype(str).to_numpy().ravel().tolist()
    assert not any("555" in value or "example" in value for value in stored)
    other, _ = import_tables(_mapping(tmp_path, IDENTITIES_MAPPING), salt="another")
    assert other["identities"]["phone_hash"][0] != identities["phone_hash"][0]


def test_raw_contacts_without_a_salt_are_refused_naming_file_and_column(tmp_path, sales_csv):
    _identities_csv(tmp_path)
    error = _import_error(_mapping(tmp_path, IDENTITIES_MAPPING))
    assert error.column == "phone" and "identities.csv" in str(error)
    assert "OMNISHELF_IDENTITY_SALT" in str(error)


def _weekly_sales(folder: Path, rows: str) -> Path:
    (folder / "weekly.csv").write_text("Shop,SKU,Week,Units,Value\n" + rows)
    mapping = folder / "weekly.toml"
    mapping.write_text(
        'freq = "W"\n[sales]\npath = "weekly.csv"\n[sales.columns]\nstore_id = "Shop"\n'
        'product_id = "SKU"\ndate = "Week"\nquantity = "Units"\nnet_sales = "Value"\n'
    )
    return mapping


def test_weekly_sales_become_order_lines_whose_weeks_sum_back_exactly(tmp_path):
    from features.engineering import demand_panel

    mapping = _weekly_sales(
        tmp_path,
        "1,100,2024-01-01,7,14.0\n1,100,2024-01-08,3,6.0\n2,100,2024-01-01,0,0\n"
        "2,100,2024-01-08,5,10.0\n",
    )
    tables, options = import_tables(mapping)
    sales = tables["transactions"]
    assert options["freq"] == "W"
    assert len(sales) == 4 * 7  # one line per day of each week
    assert (sales["customer_id"] == 0).all()
    assert sales["order_id"].nunique() == 2 * 14  # one order per store and day
    assert sales["ts"].min() == pd.Timestamp("2024-01-01 12:00")
    panel = demand_panel(tables, "W", min_active_share=0.0)
    weekly = panel.set_index(["store_id", "period"])["units"]
    assert weekly[(1, pd.Timestamp("2024-01-01"))] == pytest.approx(7)
    assert weekly[(1, pd.Timestamp("2024-01-08"))] == pytest.approx(3)
    assert weekly[(2, pd.Timestamp("2024-01-08"))] == pytest.approx(5)
    assert panel["net_sales"].sum() == pytest.approx(30.0)


def test_sales_errors_name_the_file_column_and_row(tmp_path):
    not_monday = _import_error(_weekly_sales(tmp_path, "1,100,2024-01-03,7,14.0\n"))
    assert "weekly.csv" in str(not_monday) and not_monday.column == "date"
    assert "row 2 has 2024-01-03 (Wednesday)" in str(not_monday)
    negative = _import_error(_weekly_sales(tmp_path, "1,100,2024-01-01,-7,14.0\n"))
    assert negative.column == "quantity"
    both = tmp_path / "both.toml"
    both.write_text('[transactions]\npath = "a.csv"\n[sales]\npath = "b.csv"\n')
    assert "one [transactions] section" in str(_import_error(both))
