"""A user's own CSV/parquet files, mapped onto the canonical tables by a TOML mapping file.

    name = "my_shop"            # optional, default: the mapping file's stem
    freq = "D"                  # granularity of demand series: D (daily) or W (weekly)
    country = "US"              # holidays for the calendar when no calendar file is given

    [transactions]              # required
    path = "sales.csv"          # relative to the mapping file
    [transactions.columns]      # canonical name = your column name
    customer_id = "CustomerID"
    ts = "InvoiceDate"

    [sales]                     # or, instead of [transactions]: units per store x product x
    path = "weekly.csv"         # day (or week, dated by its Monday), for forecasts and restock
                                # only: columns store_id, product_id, date, quantity[, net_sales]

Tables other than transactions are optional; products, stores, customers, calendar and
identities are derived from the transactions when absent. An identities file may carry raw
`phone` and `email` columns: they are hashed with OMNISHELF_IDENTITY_SALT on the way in and never
stored.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np
import pandas as pd

from features.contract import (
    CUSTOMER_ID,
    DATE,
    NET_SALES,
    ORDER_ID,
    PRODUCT_ID,
    QUANTITY,
    SALES,
    STORE_ID,
    TABLES,
    TS,
    DataContractError,
    conform,
)
from features.dataset import complete_tables
from features.identity import hash_contact

FREQS = ("D", "W")
CONTACT_KINDS = ("phone", "email")


def read_source(path: Path, text_columns: list[str] | None = None) -> pd.DataFrame:
    """A CSV or parquet file; `text_columns` of a CSV are read as written (a phone number with
    gaps would otherwise become a float, and leading zeros would go)."""
    if not path.exists():
        raise DataContractError(str(path), "file not found")
    if path.stat().st_size == 0:
        raise DataContractError(str(path), "file is empty")
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            return pd.read_parquet(path)
        if path.suffix.lower() in (".csv", ".txt", ".gz"):
            text = dict.fromkeys(text_columns or [], str)
            return pd.read_csv(path, low_memory=False, dtype=text)
    except (ValueError, OSError, pd.errors.ParserError) as error:
        raise DataContractError(str(path), f"cannot be read: {error}") from None
    raise DataContractError(str(path), "unknown file type; use .csv or .parquet")


def read_mapping(mapping_file: Path) -> dict:
    if not mapping_file.exists():
        raise DataContractError(str(mapping_file), "mapping file not found")
    try:
        mapping = tomllib.loads(mapping_file.read_text())
    except tomllib.TOMLDecodeError as error:
        raise DataContractError(str(mapping_file), f"is not valid TOML: {error}") from None
    if ("transactions" in mapping) == (SALES.name in mapping):
        raise DataContractError(
            str(mapping_file),
            "needs one [transactions] section (order lines) or one [sales] section (units per "
            "store x product x day or week), with a path",
        )
    known = [*TABLES, SALES.name]
    unknown = [k for k, v in mapping.items() if isinstance(v, dict) and k not in known]
    if unknown:
        raise DataContractError(
            str(mapping_file), f"unknown table section(s) {unknown}; known: {known}"
        )
    if mapping.get("freq", "D") not in FREQS:
        raise DataContractError(str(mapping_file), f"freq must be one of {FREQS}", "freq")
    return mapping


def _hash_contacts(identities: pd.DataFrame, salt: str | None, source: str) -> pd.DataFrame:
    """Raw `phone` and `email` columns become salted hashes here; the raw values go no further."""
    for kind in CONTACT_KINDS:
        if kind not in identities.columns:
            continue
        if not salt:
            raise DataContractError(
                source,
                f"raw {kind} values need a salt to be hashed: set OMNISHELF_IDENTITY_SALT "
                "(keep it secret and the same across imports)",
                kind,
            )
        identities = identities.assign(
            **{f"{kind}_hash": hash_contact(identities[kind], salt, kind)}
        ).drop(columns=kind)
    return identities


def import_tables(
    mapping_file: Path, salt: str | None = None
) -> tuple[dict[str, pd.DataFrame], dict]:
    """Read, rename, validate and complete the user's tables.

    Args:
        salt: of the phone/email hashes, when the identities file has raw `phone`/`email`.

    Returns:
        The canonical tables and the mapping's dataset options (name, freq, country).
    """
    mapping = read_mapping(mapping_file)
    tables = {}
    for table, section in mapping.items():
        if not isinstance(section, dict):
            continue
        if "path" not in section:
            raise DataContractError(str(mapping_file), f"section [{table}] needs a path")
        path = (mapping_file.parent / section["path"]).resolve()
        contacts = section.get("columns", {}) if table == "identities" else {}
        frame = read_source(path, [contacts.get(kind, kind) for kind in CONTACT_KINDS])
        renames = {theirs: ours for ours, theirs in section.get("columns", {}).items()}
        absent = [theirs for theirs in renames if theirs not in frame.columns]
        if absent:
            raise DataContractError(
                str(path),
                f"mapped column(s) {absent} not in the file; found {list(frame.columns)}",
                absent[0],
            )
        frame = frame.rename(columns=renames)
        if table == "identities":
            frame = _hash_contacts(frame, salt, str(path))
        if table == SALES.name:
            sales = conform(frame, table, str(path), SALES)
            tables["transactions"] = transactions_from_sales(
                sales, mapping.get("freq", "D"), str(path)
            )
            continue
        tables[table] = conform(frame, table, str(path))
    options = {
        "name": mapping.get("name", mapping_file.stem),
        "freq": mapping.get("freq", "D"),
        "country": mapping.get("country", "US"),
    }
    sources = {
        "transactions" if table == SALES.name else table: str(
            (mapping_file.parent / section["path"]).resolve()
        )
        for table, section in mapping.items()
        if isinstance(section, dict)
    }
    return complete_tables(tables, options["country"], sources), options


ANONYMOUS_CUSTOMER = 0  # aggregated sales name no customer: every line is this one's


def transactions_from_sales(sales: pd.DataFrame, freq: str, source: str) -> pd.DataFrame:
    """Order lines standing for summed sales: one per row and day, one order per store and day,
    all of one anonymous customer; a week's units are spread evenly over its seven days (weekly
    data has no daily shape), so weekly sums come back exactly and daily ones are even.

    Without `net_sales` a unit counts 1: sales-weighted metrics then weigh series by units.
    """
    days = 7 if freq == "W" else 1
    date = pd.to_datetime(sales[DATE]).dt.normalize()
    if freq == "W" and (date.dt.weekday != 0).any():
        row = int(np.flatnonzero(date.dt.weekday.to_numpy() != 0)[0])
        raise DataContractError(
            source,
            f"weekly sales are dated by the Monday of their week; row {row + 2} has "
            f"{date.iloc[row]:%Y-%m-%d} ({date.iloc[row]:%A})",
            DATE,
        )
    amount = sales[NET_SALES].fillna(sales[QUANTITY]).to_numpy(dtype="float64")
    rows = np.repeat(np.arange(len(sales)), days)
    day = date.to_numpy()[rows] + pd.to_timedelta(np.tile(np.arange(days), len(sales)), "D")
    # Noon: the middle of any opening hours, so no line falls into a neighbouring day.
    stamp = pd.DatetimeIndex(day) + pd.Timedelta(hours=12)
    store = sales[STORE_ID].to_numpy()[rows]
    orders = pd.MultiIndex.from_arrays([store, stamp]).factorize()[0] + 1
    frame = pd.DataFrame(
        {
            CUSTOMER_ID: ANONYMOUS_CUSTOMER,
            ORDER_ID: orders,
            PRODUCT_ID: sales[PRODUCT_ID].to_numpy()[rows],
            STORE_ID: store,
            TS: stamp,
            QUANTITY: sales[QUANTITY].to_numpy(dtype="float64")[rows] / days,
            NET_SALES: amount[rows] / days,
        }
    )
    return conform(frame, "transactions", source)
