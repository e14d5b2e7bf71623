"""The data contract: canonical tables, their columns and dtypes, and the checks on every source.

Every loader (Complete Journey, the synthetic generator, a user's import) produces these tables, and
everything downstream reads only these. Ids are integers; timestamps are naive local store time.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

# Callers catch the contract's error from here, where it always was.
from features.validation import DataContractError as DataContractError
from features.validation import validate, validate_references, validate_unique

CUSTOMER_ID = "customer_id"
ORDER_ID = "order_id"
PRODUCT_ID = "product_id"
STORE_ID = "store_id"
CHANNEL = "channel"
TS = "ts"
QUANTITY = "quantity"
NET_SALES = "net_sales"
DISCOUNT = "discount"
DATE = "date"
CATEGORY = "category"  # of a product, in the products table

CHANNELS = ("store", "web", "app", "mini_program")


@dataclass(frozen=True)
class Column:
    name: str
    kind: str  # id | int | float | str | bool | timestamp | date
    description: str
    required: bool = True
    non_negative: bool = False
    default: object = None  # value of an optional column the source does not have


@dataclass(frozen=True)
class Table:
    name: str
    description: str
    columns: tuple[Column, ...]
    key: tuple[str, ...] = ()
    # column -> table whose key it must exist in
    references: dict[str, str] = field(default_factory=dict)
    required: bool = True

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]


def _id(name: str, what: str, required: bool = True) -> Column:
    return Column(name, "id", f"integer id of the {what}", required=required)


TABLES: dict[str, Table] = {
    t.name: t
    for t in (
        Table(
            "transactions",
            "one row per order line, in any channel",
            (
                _id(CUSTOMER_ID, "customer's account in the channel (One ID resolves it)"),
                _id(ORDER_ID, "order (basket)"),
                _id(PRODUCT_ID, "product"),
                _id(STORE_ID, "store that sold or fulfilled the line"),
                Column(CHANNEL, "str", "store, web, app or mini_program", False, default="store"),
                Column(TS, "timestamp", "time of the order, naive local time"),
                Column(QUANTITY, "float", "units sold", non_negative=True),
                Column(NET_SALES, "float", "amount paid after discounts", non_negative=True),
                Column(DISCOUNT, "float", "discount granted", False, True, default=0.0),
            ),
            references={CUSTOMER_ID: "customers", PRODUCT_ID: "products", STORE_ID: "stores"},
        ),
        Table(
            "products",
            "the catalogue",
            (
                _id(PRODUCT_ID, "product"),
                Column(CATEGORY, "str", "product category", False, default="unknown"),
                Column("department", "str", "department", False, default="unknown"),
                Column("brand", "str", "brand", False, default="unknown"),
                Column("price", "float", "list price per unit", False, True, default=np.nan),
                Column(
                    "sold_in_units",
                    "bool",
                    "quantity counts units (false for fuel, weights, coupons)",
                    False,
                    default=True,
                ),
                Column("pack_size", "int", "units per supplier pack", False, True, default=1),
                Column(
                    "min_order_qty", "int", "supplier minimum order, units", False, True, default=0
                ),
            ),
            key=(PRODUCT_ID,),
        ),
        Table(
            "stores",
            "physical stores; online orders are fulfilled by one of them",
            (
                _id(STORE_ID, "store"),
                Column("region", "str", "region", False, default="unknown"),
                Column("lead_time_days", "int", "supplier lead time", False, True, default=2),
            ),
            key=(STORE_ID,),
        ),
        Table(
            "customers",
            "one row per resolved customer",
            (
                _id(CUSTOMER_ID, "customer"),
                _id("home_store_id", "store the customer uses most", required=False),
                Column("opt_out", "bool", "opted out of personalisation", False, default=False),
            ),
            key=(CUSTOMER_ID,),
        ),
        Table(
            "calendar",
            "one row per day of the data: holidays and retail events",
            (
                Column(DATE, "date", "calendar day"),
                Column("is_holiday", "bool", "public holiday", False, default=False),
                Column("holiday_name", "str", "holiday name or empty", False, default=""),
                Column(
                    "event",
                    "str",
                    "retail event (Black Friday, 618, ...) or empty",
                    False,
                    default="",
                ),
            ),
            key=(DATE,),
        ),
        Table(
            "promotions",
            "promotion periods by store x product (end date inclusive; optional)",
            (
                _id(STORE_ID, "store"),
                _id(PRODUCT_ID, "product"),
                Column("start_date", "date", "first day of the promotion"),
                Column("end_date", "date", "last day of the promotion"),
                Column("promo_type", "str", "display, mailer, display_mailer, price_cut, ..."),
                Column("price", "float", "promoted unit price", False, True, default=np.nan),
            ),
            references={PRODUCT_ID: "products", STORE_ID: "stores"},
            # Not derivable from transactions: an import without a promotions file must still save.
            required=False,
        ),
        Table(
            "inventory",
            "on-hand snapshots at the start of each day (optional)",
            (
                _id(STORE_ID, "store"),
                _id(PRODUCT_ID, "product"),
                Column(DATE, "date", "day of the snapshot"),
                Column(
                    "on_hand", "float", "units on hand at the start of the day", non_negative=True
                ),
            ),
            references={PRODUCT_ID: "products", STORE_ID: "stores"},
            required=False,
        ),
        Table(
            "identities",
            "channel identities and the keys that match them across channels (optional)",
            (
                Column(CHANNEL, "str", "channel of the identity"),
                Column("channel_customer_id", "str", "id of the person in that channel"),
                _id(CUSTOMER_ID, "account the channel's transactions use (before resolution)"),
                Column("phone_hash", "str", "salted hash of the phone number", False, default=""),
                Column("email_hash", "str", "salted hash of the email", False, default=""),
                Column(
                    "linked_to",
                    "str",
                    "declared link to another identity, as channel:channel_customer_id",
                    False,
                    default="",
                ),
            ),
            references={CUSTOMER_ID: "customers"},
            required=False,
        ),
        Table(
            "true_demand",
            "uncensored demand by store x product x day; only the synthetic generator knows it",
            (
                _id(STORE_ID, "store"),
                _id(PRODUCT_ID, "product"),
                Column(DATE, "date", "day"),
                Column("demand", "float", "units customers wanted", non_negative=True),
            ),
            required=False,
        ),
    )
}


# Sales already summed per store x product x day or week: an import input that becomes one
# transaction line per row (no customers or baskets known), for forecasting and restock only.
SALES = Table(
    "sales",
    "units sold per store x product x day (or week: date = its Monday), instead of transactions",
    (
        _id(STORE_ID, "store"),
        _id(PRODUCT_ID, "product"),
        Column(DATE, "date", "the day, or the Monday of the week"),
        Column(QUANTITY, "float", "units sold", non_negative=True),
        Column(
            NET_SALES, "float", "amount paid (default: units, one per unit)", False, True, np.nan
        ),
    ),
    key=(STORE_ID, PRODUCT_ID, DATE),
)


def conform(
    frame: pd.DataFrame, table: str, source: str, spec: Table | None = None
) -> pd.DataFrame:
    """Check a source frame against the contract of `table` (or `spec`, for an input that is
    not stored as such) and return it in canonical form.

    Raises:
        DataContractError: empty source, missing required column, values of the wrong type,
            NaN or negative values where they are not allowed, duplicate keys; the message names
            the source, the column, the problem and example rows (pandera finds them).
    """
    result = validate(frame, spec or TABLES[table], source)
    if CHANNEL in result and table in ("transactions", "identities"):
        spelled = pd.unique(result[CHANNEL])  # normalise the few distinct spellings, not every row
        canonical = {v: str(v).strip().lower().replace("-", "_").replace(" ", "_") for v in spelled}
        result[CHANNEL] = result[CHANNEL].map(canonical)
    return result


def check_references(
    tables: dict[str, pd.DataFrame], sources: dict[str, str] | None = None
) -> None:
    """Every id a table mentions must exist in the table that owns it."""
    sources = sources or {}
    for name, frame in tables.items():
        owners = {
            column: (owner, tables[owner][TABLES[owner].key[0]])
            for column, owner in TABLES[name].references.items()
            if owner in tables
        }
        if owners:
            validate_references(frame, owners, sources.get(name, name))


def identity_key(channel: pd.Series, channel_customer_id: pd.Series) -> pd.Series:
    return channel.astype(str) + ":" + channel_customer_id.astype(str)


def check_identities(identities: pd.DataFrame, source: str) -> None:
    """Identity keys must be unique: one row per channel identity."""
    validate_unique(identities, [CHANNEL, "channel_customer_id"], source, "channel identities")
