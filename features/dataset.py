"""Canonical tables on disk: one parquet file per table plus dataset.json, written atomically."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import holidays
import pandas as pd

from features.contract import (
    CHANNEL,
    CUSTOMER_ID,
    DATE,
    PRODUCT_ID,
    STORE_ID,
    TABLES,
    TS,
    DataContractError,
    check_identities,
    check_references,
    conform,
)

METADATA_FILE = "dataset.json"


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    freq: str  # "D" or "W": the granularity the demand series support
    country: str  # holidays of this country feed the calendar features
    fingerprint: str
    start: str
    end: str
    transactions: int


def fingerprint(tables: dict[str, pd.DataFrame]) -> str:
    """A content hash of all tables: two datasets with the same fingerprint hold the same rows."""
    digest = hashlib.sha256()
    for name in sorted(tables):
        digest.update(name.encode())
        digest.update(pd.util.hash_pandas_object(tables[name], index=False).values.tobytes())
    return digest.hexdigest()[:16]


def build_calendar(start: pd.Timestamp, end: pd.Timestamp, country: str) -> pd.DataFrame:
    days = pd.date_range(start.normalize(), end.normalize(), freq="D")
    names = holidays.country_holidays(country, years=range(days[0].year, days[-1].year + 1))
    holiday_name = pd.Series([names.get(d.date(), "") for d in days])
    frame = pd.DataFrame({DATE: days, "holiday_name": holiday_name})
    frame["is_holiday"] = frame["holiday_name"] != ""
    return frame


def complete_tables(
    tables: dict[str, pd.DataFrame], country: str, sources: dict[str, str]
) -> dict[str, pd.DataFrame]:
    """Derive the dimension tables a source did not bring from its transactions, then check ids.

    Args:
        sources: table name -> where it came from (file path), used in error messages.
    """
    tables = dict(tables)
    sources = {name: sources.get(name, f"{name} derived from transactions") for name in TABLES}
    sales = tables["transactions"]
    derived = {
        "products": lambda: pd.DataFrame({PRODUCT_ID: sales[PRODUCT_ID].unique()}),
        "stores": lambda: pd.DataFrame({STORE_ID: sales[STORE_ID].unique()}),
        "customers": lambda: home_stores(sales),
        "calendar": lambda: build_calendar(sales[TS].min(), sales[TS].max(), country),
        "identities": lambda: account_identities(sales),
    }
    for name, derive in derived.items():
        if name not in tables:
            tables[name] = conform(derive(), name, sources[name])
    check_references(tables, sources)
    check_identities(tables["identities"], sources["identities"])
    return tables


def account_identities(sales: pd.DataFrame) -> pd.DataFrame:
    """Without an identities table each account is one identity, in the channel it uses most."""
    counts = sales.groupby([CUSTOMER_ID, CHANNEL], sort=False).size().rename("n").reset_index()
    top = counts.sort_values([CUSTOMER_ID, "n"], ascending=[True, False]).drop_duplicates(
        CUSTOMER_ID
    )
    return pd.DataFrame(
        {
            CHANNEL: top[CHANNEL].to_numpy(),
            "channel_customer_id": top[CUSTOMER_ID].astype(str).to_numpy(),
            CUSTOMER_ID: top[CUSTOMER_ID].to_numpy(),
        }
    )


def home_stores(sales: pd.DataFrame) -> pd.DataFrame:
    """Each customer's most used store (by order lines)."""
    counts = sales.groupby([CUSTOMER_ID, STORE_ID], sort=False).size().rename("n").reset_index()
    top = counts.sort_values([CUSTOMER_ID, "n"], ascending=[True, False]).drop_duplicates(
        CUSTOMER_ID
    )
    return top.rename(columns={STORE_ID: "home_store_id"})[[CUSTOMER_ID, "home_store_id"]]


def save_tables(
    tables: dict[str, pd.DataFrame], directory: Path, name: str, freq: str, country: str
) -> DatasetInfo:
    """Write the tables and their metadata; readers see the old dataset or the new, never half."""
    for table in TABLES.values():
        if table.required and table.name not in tables:
            raise DataContractError(name, f"table '{table.name}' is required")
    sales = tables["transactions"]
    info = DatasetInfo(
        name=name,
        freq=freq,
        country=country,
        fingerprint=fingerprint(tables),
        start=str(sales[TS].min()),
        end=str(sales[TS].max()),
        transactions=len(sales),
    )
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}-", dir=directory.parent))
    try:
        for table_name, frame in tables.items():
            frame.to_parquet(staging / f"{table_name}.parquet", index=False)
        (staging / METADATA_FILE).write_text(json.dumps(asdict(info), indent=2))
        replace_directory(staging, directory)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return info


def write_atomically(path: Path, write: Callable[[Path], object]) -> None:
    """`write` fills a hidden sibling file that then replaces `path` in one rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    write(partial)
    os.replace(partial, path)


def replace_directory(staging: Path, directory: Path) -> None:
    """Swap a fully written staging folder into place with renames only."""
    retired = directory.with_name(f".{directory.name}-retired")
    shutil.rmtree(retired, ignore_errors=True)
    if directory.exists():
        os.replace(directory, retired)
    os.replace(staging, directory)
    shutil.rmtree(retired, ignore_errors=True)


def load_info(directory: Path) -> DatasetInfo:
    path = directory / METADATA_FILE
    if not path.exists():
        raise FileNotFoundError(
            f"no dataset in {directory}: run `omnishelf load` or `omnishelf import` first"
        )
    return DatasetInfo(**json.loads(path.read_text()))


def load_tables(directory: Path, names: list[str] | None = None) -> dict[str, pd.DataFrame]:
    load_info(directory)
    wanted = names or [p.stem for p in directory.glob("*.parquet")]
    return {
        name: pd.read_parquet(directory / f"{name}.parquet")
        for name in wanted
        if (directory / f"{name}.parquet").exists()
    }
