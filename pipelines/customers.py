"""Decisions on customers that must count at once, without retraining: merge and split
identities, opt out or back in, forget.

Each decision is recorded in the identity ledger, the customer feature tables are recomputed from
the resolved data, and the rows that changed are written straight to the online store, stamped
after every earlier write they must win over (Redis keeps a row only if it is newer): identity
rows with the decision's time, customer rows on the feature clock, so that the next
materialised days still replace them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.contract import CHANNEL, CUSTOMER_ID, identity_key
from features.dataset import load_info, load_tables, save_tables, write_atomically
from features.engineering import EVENT_TIMESTAMP, customer_features
from features.errors import UserInputError
from features.feature_store import (
    data_clock,
    open_store,
    read_offline_table,
    write_offline_tables,
    write_online,
)
from features.identity import (
    IDENTITY_KEY,
    SOURCE_CUSTOMER_ID,
    IdentityLedger,
    identity_features,
    resolution,
    resolved_tables,
    without_forgotten,
    write_identity_map,
)
from features.model_removals import queue_removal
from features.repo.definitions import customer_profile
from features.settings import Settings
from pipelines.steps import FINGERPRINT_FILE, features_built_from


@dataclass(frozen=True)
class CustomerUpdate:
    action: str
    customers_changed: int
    identities_changed: int
    seconds: float


def merge(settings: Settings, key: str, other: str, reason: str) -> CustomerUpdate:
    identity_map, _ = resolution(settings)
    _check_keys(identity_map, [key, other])
    IdentityLedger(settings.identity_dir).add_rule("merge", key, other, reason)
    return _refresh(settings, "merge")


def split(settings: Settings, key: str, reason: str) -> CustomerUpdate:
    identity_map, _ = resolution(settings)
    _check_keys(identity_map, [key])
    account = identity_map.loc[identity_map[IDENTITY_KEY] == key, SOURCE_CUSTOMER_ID].iloc[0]
    sharing = identity_map[
        (identity_map[SOURCE_CUSTOMER_ID] == account) & (identity_map[IDENTITY_KEY] != key)
    ]
    if len(sharing):
        # Their transactions are one account's: no split can tell them apart.
        raise UserInputError(
            f"{key} shares account {account} with {sharing[IDENTITY_KEY].iloc[0]}: "
            "identities of one account cannot be split"
        )
    IdentityLedger(settings.identity_dir).add_rule("split", key, reason=reason)
    return _refresh(settings, "split")


def set_opt_out(settings: Settings, customer_id: int, opt_out: bool) -> CustomerUpdate:
    _check_customer(settings, customer_id)
    IdentityLedger(settings.identity_dir).set_consent(customer_id, opt_out)
    return _refresh(settings, "opt-out" if opt_out else "opt-in")


def forget(settings: Settings, customer_id: int) -> CustomerUpdate:
    """Remove the customer everywhere: online rows overwritten, source tables and feature tables
    rewritten without them, a mark that keeps them out of later loads and training runs, and a
    place on the forget queue: the registered recommender still holds their history until the
    next `omnishelf train recommender` (features/model_removals.py).

    The mark comes first and every later step is idempotent, so a rerun after a crash finishes
    the job, and a rerun after success changes nothing.
    """
    began = time.perf_counter()
    ledger = IdentityLedger(settings.identity_dir)
    if customer_id not in set(ledger.forgotten()[CUSTOMER_ID]):
        identity_map = _check_customer(settings, customer_id)
        theirs = identity_map[identity_map[CUSTOMER_ID] == customer_id]
        ledger.forget(
            customer_id, theirs[SOURCE_CUSTOMER_ID].unique().tolist(), theirs[IDENTITY_KEY].tolist()
        )
    # Their history also sits in the registered recommender: the next training removes it.
    queue_removal(settings.identity_dir, customer_id)
    forgotten = ledger.forgotten()
    accounts = forgotten.loc[forgotten[CUSTOMER_ID] == customer_id, SOURCE_CUSTOMER_ID]
    tables = load_tables(settings.tables_dir)
    mine = tables["identities"][tables["identities"][CUSTOMER_ID].isin(accounts)]
    profile = read_offline_table(settings, "customer_profile")
    identity_rows = read_offline_table(settings, "identity_resolution")
    resolved_here = (identity_rows[CUSTOMER_ID] == customer_id).fillna(False)
    keys = sorted(
        set(identity_key(mine[CHANNEL], mine["channel_customer_id"]))
        | set(identity_rows.loc[resolved_here, IDENTITY_KEY])
    )
    if not keys and not (profile[CUSTOMER_ID] == customer_id).any():
        return CustomerUpdate("forget", 0, 0, time.perf_counter() - began)  # already done
    store = open_store(settings)
    # Feast has no delete by entity: overwrite every value (an all-empty row is refused, so the
    # consent flag and the reason stay set).
    write_online(
        store, "customer_profile", _tombstones([customer_id], _profile_stamp(settings, store))
    )
    write_online(
        store,
        "identity_resolution",
        pd.DataFrame(
            {
                IDENTITY_KEY: keys,
                CUSTOMER_ID: pd.array([None] * len(keys), dtype="Int64"),
                "reason": "forgotten",
                EVENT_TIMESTAMP: ledger.latest_stamp(),
            }
        ),
    )
    info = load_info(settings.tables_dir)
    kept = without_forgotten(tables, forgotten)
    updated = save_tables(kept, settings.tables_dir, info.name, info.freq, info.country)
    write_offline_tables(
        settings,
        {
            "customer_profile": profile[profile[CUSTOMER_ID] != customer_id],
            "identity_resolution": identity_rows[~identity_rows[IDENTITY_KEY].isin(keys)],
        },
    )
    # The aggregate views hold no personal rows: they stay valid for the new tables.
    marker = settings.feast_dir / FINGERPRINT_FILE
    built_from = features_built_from(updated.fingerprint)
    write_atomically(marker, lambda path: path.write_text(built_from))
    write_identity_map(settings, resolution(settings)[0])  # the audit map, without them
    return CustomerUpdate("forget", 1, len(keys), time.perf_counter() - began)


def _refresh(settings: Settings, action: str) -> CustomerUpdate:
    """Re-resolve, rewrite the customer and identity feature tables, push what changed."""
    began = time.perf_counter()
    tables, identity_map, _ = resolved_tables(settings, ["transactions", "products", "customers"])
    # The decision's own stamp: later than every earlier write it must win over.
    now = IdentityLedger(settings.identity_dir).latest_stamp()
    previous_identities = read_offline_table(settings, "identity_resolution")
    identities = identity_features(identity_map, previous_identities, now)
    profile = customer_features(tables)
    before = _latest(read_offline_table(settings, "customer_profile"))
    after = _latest(profile)
    changed = _changed_rows(before, after)
    vanished = sorted(set(before[CUSTOMER_ID]) - set(after[CUSTOMER_ID]))
    store = open_store(settings)
    if len(changed) or vanished:
        stamp = _profile_stamp(settings, store)
        if len(changed):
            write_online(store, "customer_profile", changed.assign(**{EVENT_TIMESTAMP: stamp}))
        if vanished:
            write_online(store, "customer_profile", _tombstones(vanished, stamp))
    moved = identities[identities[EVENT_TIMESTAMP] == now]
    if len(moved):
        write_online(store, "identity_resolution", moved)
    write_offline_tables(settings, {"customer_profile": profile, "identity_resolution": identities})
    write_identity_map(settings, identity_map)
    return CustomerUpdate(
        action, len(changed) + len(vanished), len(moved), time.perf_counter() - began
    )


def _latest(profile: pd.DataFrame) -> pd.DataFrame:
    ordered = profile.sort_values([CUSTOMER_ID, EVENT_TIMESTAMP])
    return ordered.drop_duplicates(CUSTOMER_ID, keep="last").reset_index(drop=True)


def _changed_rows(before: pd.DataFrame, after: pd.DataFrame) -> pd.DataFrame:
    """Rows of `after` that are new or differ from `before` in any feature."""
    features = [c for c in after.columns if c not in (CUSTOMER_ID, EVENT_TIMESTAMP)]
    joined = after.merge(before, on=CUSTOMER_ID, how="left", suffixes=("", "_before"))
    differs = np.zeros(len(joined), bool)
    for column in features:
        new, old = joined[column], joined[f"{column}_before"]
        differs |= ~((new == old) | (new.isna() & old.isna())).to_numpy()
    return after[differs].reset_index(drop=True)


def _profile_stamp(settings: Settings, store) -> pd.Timestamp:
    """Stamp of decision rows of the customer view: the feature clock ("now" for replayed
    history is the end of the materialised data), strictly after the previous decision."""
    clock = None
    if settings.feature_clock == "data":
        clock = data_clock(store, ["customer_profile"])
    floor = pd.Timestamp(clock) if clock is not None else pd.Timestamp.now()
    return IdentityLedger(settings.identity_dir).next_profile_stamp(floor)


def _tombstones(customer_ids: list[int], now: pd.Timestamp) -> pd.DataFrame:
    """Customer rows with every value emptied and consent withheld, so nothing personalises."""
    empty = {field.name: None for field in customer_profile.features}
    return pd.DataFrame(
        {
            CUSTOMER_ID: np.asarray(customer_ids, dtype="int64"),
            **empty,
            "opt_out": 1,
            EVENT_TIMESTAMP: now,
        }
    )


def _check_keys(identity_map: pd.DataFrame, keys: list[str]) -> None:
    known = set(identity_map[IDENTITY_KEY])
    unknown = [k for k in keys if k not in known]
    if unknown:
        raise LookupError(
            f"unknown identity {unknown[0]!r}: identities are channel:channel_customer_id, "
            f"e.g. {next(iter(sorted(known)), 'store:123')!r}"
        )


def _check_customer(settings: Settings, customer_id: int) -> pd.DataFrame:
    """The identity map, once the customer is known to it."""
    identity_map, _ = resolution(settings)
    forgotten = set(IdentityLedger(settings.identity_dir).forgotten()[CUSTOMER_ID])
    if customer_id in forgotten or customer_id not in set(identity_map[CUSTOMER_ID]):
        raise LookupError(f"unknown customer_id {customer_id}")
    return identity_map


def audit(settings: Settings, customer_id: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The customer's identities (why each is there) and the decisions that touched them."""
    identity_map = _check_customer(settings, customer_id)
    theirs = identity_map[identity_map[CUSTOMER_ID] == customer_id]
    rules = IdentityLedger(settings.identity_dir).rules()
    keys = set(theirs[IDENTITY_KEY])
    touched = rules[rules[IDENTITY_KEY].isin(keys) | rules["other_key"].isin(keys)]
    return theirs.reset_index(drop=True), touched.reset_index(drop=True)
