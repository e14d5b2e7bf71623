"""One ID: channel identities resolved into one customer id, with an audit trail.

Nodes are channel identities (a loyalty card, a web account, an app or mini-program user). Edges
join identities that share a hashed phone or email, a declared link, the same source account, or a
manual merge; a manual split detaches an identity from every edge made before it. Connected
components (scipy's union-find) are customers, and each takes the smallest source customer id among
its identities: re-running gives the same ids, and a merge keeps the older customer's id.

Raw phone numbers and emails never reach the tables: `hash_contact` turns them into salted HMACs at
import.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from features.contract import CHANNEL, CUSTOMER_ID, identity_key
from features.dataset import load_info, load_tables, write_atomically
from features.engineering import EVENT_TIMESTAMP
from features.settings import Settings

IDENTITY_KEY = "identity_key"
SOURCE_CUSTOMER_ID = "source_customer_id"
MATCH_KEYS = ("phone_hash", "email_hash")
# Edge kinds, strongest evidence first: an identity's reason is the strongest edge it kept.
EDGE_KINDS = ("account", "merge", "link", "phone_hash", "email_hash")
RULE_COLUMNS = ["action", IDENTITY_KEY, "other_key", "reason", "created_at"]
FORGOTTEN_COLUMNS = [CUSTOMER_ID, SOURCE_CUSTOMER_ID, "forgotten_at"]
CONSENT_COLUMNS = [CUSTOMER_ID, "opt_out", "changed_at"]


def hash_contact(values: pd.Series, salt: str, kind: str) -> pd.Series:
    """Salted HMAC-SHA256 of normalised phones (digits only) or emails (trimmed, lower case);
    blanks stay blank so that they never match each other."""
    text = values.fillna("").astype(str).str.strip()
    if kind == "phone":
        text = text.str.replace(r"\D", "", regex=True)
    elif kind == "email":
        text = text.str.lower()
    else:
        raise ValueError(f"kind must be phone or email, not {kind!r}")
    key = salt.encode()
    distinct = text.unique()
    digests = [
        hmac.new(key, value.encode(), hashlib.sha256).hexdigest()[:32] if value else ""
        for value in distinct
    ]
    return text.map(dict(zip(distinct, digests, strict=True)))


def resolve(identities: pd.DataFrame, rules: pd.DataFrame | None = None) -> pd.DataFrame:
    """The identity map: every identity with its resolved customer id and why it is there.

    Args:
        identities: channel, channel_customer_id, customer_id (the source's account id),
            phone_hash, email_hash, linked_to (an identity key, or blank).
        rules: manual `merge` (identity_key + other_key) and `split` (identity_key) decisions.
            Rules naming an identity the source no longer has are left out (a reload may drop
            accounts); new rules are checked when they are made.
    """
    rules = empty_rules() if rules is None else rules
    nodes = identities.assign(
        **{IDENTITY_KEY: identity_key(identities[CHANNEL], identities["channel_customer_id"])}
    )
    nodes = nodes.sort_values(IDENTITY_KEY, ignore_index=True)
    index = pd.Series(np.arange(len(nodes)), index=nodes[IDENTITY_KEY])
    other_known = (rules["action"] != "merge") | rules["other_key"].isin(index.index)
    rules = rules[rules[IDENTITY_KEY].isin(index.index) & other_known]
    split_at = rules[rules["action"] == "split"].groupby(IDENTITY_KEY)["created_at"].max()
    split_time = nodes[IDENTITY_KEY].map(split_at).to_numpy()
    detached = pd.notna(split_time)

    edges = [_same_value_edges(nodes[CUSTOMER_ID], np.zeros(len(nodes), bool), "account")]
    for key in MATCH_KEYS:
        edges.append(_same_value_edges(nodes[key].where(nodes[key] != ""), detached, key))
    linked = nodes["linked_to"].map(index)
    has_link = linked.notna().to_numpy() & ~detached
    source = np.flatnonzero(has_link)
    target = linked.to_numpy()[has_link].astype(np.int64)
    keep = ~detached[target]
    edges.append(_edge_frame(source[keep], target[keep], "link"))
    merges = rules[rules["action"] == "merge"]
    if len(merges):
        left, right = index[merges[IDENTITY_KEY]].to_numpy(), index[merges["other_key"]].to_numpy()
        # A merge survives a split made before it, not one made after it.
        made = merges["created_at"].to_numpy()
        keep = ~(detached[left] & (split_time[left] > made)) & ~(
            detached[right] & (split_time[right] > made)
        )
        edges.append(_edge_frame(left[keep], right[keep], "merge"))
    edges = pd.concat(edges, ignore_index=True)

    graph = coo_matrix(
        (np.ones(len(edges)), (edges["a"], edges["b"])), shape=(len(nodes), len(nodes))
    )
    _, component = connected_components(graph, directed=False)
    resolved = nodes[CUSTOMER_ID].groupby(component).transform("min")

    # Why each identity is where it is: its strongest kept edge and the identity at the other end.
    both_ends = pd.concat(
        [
            edges.rename(columns={"a": "node", "b": "other"}),
            edges.rename(columns={"b": "node", "a": "other"}),
        ]
    )
    both_ends["strength"] = both_ends["kind"].map({k: i for i, k in enumerate(EDGE_KINDS)})
    strongest = both_ends.sort_values(["node", "strength", "other"]).drop_duplicates("node")
    strongest = strongest.set_index("node")
    reason = strongest["kind"].reindex(range(len(nodes))).fillna("own").to_numpy()
    other = strongest["other"].reindex(range(len(nodes)))
    matched_with = np.where(
        other.notna(), nodes[IDENTITY_KEY].to_numpy()[other.fillna(0).astype(int)], ""
    )
    return pd.DataFrame(
        {
            IDENTITY_KEY: nodes[IDENTITY_KEY],
            CHANNEL: nodes[CHANNEL],
            SOURCE_CUSTOMER_ID: nodes[CUSTOMER_ID],
            CUSTOMER_ID: resolved.to_numpy(),
            "reason": reason,
            "matched_with": matched_with,
            "detached": detached,
        }
    )


def _same_value_edges(values: pd.Series, detached: np.ndarray, kind: str) -> pd.DataFrame:
    """A star per group of identities sharing a value (detached identities left out)."""
    frame = pd.DataFrame({"value": values.to_numpy(), "node": np.arange(len(values))})
    frame = frame[frame["value"].notna() & ~detached]
    first = frame.groupby("value")["node"].transform("min")
    star = frame[frame["node"] != first]
    return _edge_frame(star["node"].to_numpy(), first[star.index].to_numpy(), kind)


def _edge_frame(a: np.ndarray, b: np.ndarray, kind: str) -> pd.DataFrame:
    return pd.DataFrame({"a": np.asarray(a, np.int64), "b": np.asarray(b, np.int64), "kind": kind})


def identity_features(
    identity_map: pd.DataFrame, previous: pd.DataFrame | None, now: pd.Timestamp
) -> pd.DataFrame:
    """Rows of the `identity_resolution` view: identities whose customer or reason changed since
    `previous` are stamped `now`, the others keep their stamp, so materialisation only moves
    what changed."""
    rows = identity_map[[IDENTITY_KEY, CUSTOMER_ID, "reason"]].assign(**{EVENT_TIMESTAMP: now})
    rows[CUSTOMER_ID] = rows[CUSTOMER_ID].astype("Int64")
    if previous is not None and len(previous):
        before = previous.set_index(IDENTITY_KEY)
        same = (rows[CUSTOMER_ID] == rows[IDENTITY_KEY].map(before[CUSTOMER_ID])).fillna(False) & (
            rows["reason"] == rows[IDENTITY_KEY].map(before["reason"])
        )
        stamps = rows[IDENTITY_KEY].map(before[EVENT_TIMESTAMP])
        rows[EVENT_TIMESTAMP] = stamps.where(same, now)
        # An identity the source no longer has must stop resolving online too.
        gone = previous[~previous[IDENTITY_KEY].isin(rows[IDENTITY_KEY])]
        removed = gone.assign(
            **{CUSTOMER_ID: pd.array([None] * len(gone), dtype="Int64")},
            reason="removed",
            **{EVENT_TIMESTAMP: gone[EVENT_TIMESTAMP].where(gone["reason"] == "removed", now)},
        )
        rows = pd.concat([rows, removed[rows.columns]], ignore_index=True)
    return rows.reset_index(drop=True)


def customer_mapping(identity_map: pd.DataFrame) -> pd.Series:
    """Source customer id -> resolved customer id (ids without an identity map to themselves)."""
    pairs = identity_map[[SOURCE_CUSTOMER_ID, CUSTOMER_ID]].drop_duplicates(SOURCE_CUSTOMER_ID)
    return pairs.set_index(SOURCE_CUSTOMER_ID)[CUSTOMER_ID]


def apply_resolution(
    tables: dict[str, pd.DataFrame],
    identity_map: pd.DataFrame,
    forgotten: pd.DataFrame | None = None,
    consents: pd.DataFrame | None = None,
) -> dict[str, pd.DataFrame]:
    """Tables keyed by resolved customers: transactions re-keyed, customers collapsed (an opt-out
    of any identity opts the whole customer out), forgotten customers removed, the latest consent
    change applied."""
    mapping = customer_mapping(identity_map)
    forgotten_ids = set() if forgotten is None else set(forgotten[CUSTOMER_ID])
    out = dict(tables)
    if "transactions" in tables:
        sales = tables["transactions"]
        ids = sales[CUSTOMER_ID].map(mapping).fillna(sales[CUSTOMER_ID]).astype("int64")
        sales = sales.assign(**{CUSTOMER_ID: ids})
        out["transactions"] = sales[~ids.isin(forgotten_ids)].reset_index(drop=True)
    if "customers" in tables:
        customers = tables["customers"]
        ids = customers[CUSTOMER_ID].map(mapping).fillna(customers[CUSTOMER_ID]).astype("int64")
        customers = customers.assign(**{CUSTOMER_ID: ids, "_own": ids == customers[CUSTOMER_ID]})
        # The surviving customer's own row gives the home store; any opt-out wins.
        opt_out = customers.groupby(CUSTOMER_ID)["opt_out"].any()
        customers = customers.sort_values([CUSTOMER_ID, "_own"], ascending=[True, False])
        customers = customers.drop_duplicates(CUSTOMER_ID).drop(columns="_own")
        customers["opt_out"] = customers[CUSTOMER_ID].map(opt_out)
        if consents is not None and len(consents):
            # A consent names the customer as resolved then (an account id): map it to the
            # customer it belongs to now, so an opt-out survives a later merge.
            owner = consents[CUSTOMER_ID].map(mapping).fillna(consents[CUSTOMER_ID])
            consents = consents.assign(**{CUSTOMER_ID: owner.astype("int64")})
            latest = consents.sort_values("changed_at").drop_duplicates(CUSTOMER_ID, keep="last")
            changed = customers[CUSTOMER_ID].map(latest.set_index(CUSTOMER_ID)["opt_out"])
            customers["opt_out"] = changed.fillna(customers["opt_out"]).astype(bool)
        out["customers"] = customers[~customers[CUSTOMER_ID].isin(forgotten_ids)].reset_index(
            drop=True
        )
    if "identities" in tables:
        keep = ~tables["identities"][CUSTOMER_ID].map(mapping).isin(forgotten_ids)
        out["identities"] = tables["identities"][keep].reset_index(drop=True)
    return out


def without_forgotten(
    tables: dict[str, pd.DataFrame], forgotten: pd.DataFrame
) -> dict[str, pd.DataFrame]:
    """Source tables minus every account of a forgotten customer (a reload must not bring
    them back)."""
    accounts = set(forgotten[SOURCE_CUSTOMER_ID])
    if not accounts:
        return tables
    kept = {
        name: frame[~frame[CUSTOMER_ID].isin(accounts)].reset_index(drop=True)
        if CUSTOMER_ID in frame
        else frame
        for name, frame in tables.items()
    }
    if "identities" in tables:
        # Links that name a removed identity would keep its key: blank them.
        identities = tables["identities"]
        gone = identities[identities[CUSTOMER_ID].isin(accounts)]
        keys = set(identity_key(gone[CHANNEL], gone["channel_customer_id"]))
        links = kept["identities"]["linked_to"]
        kept["identities"] = kept["identities"].assign(linked_to=links.where(~links.isin(keys), ""))
    return kept


def empty_rules() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "action": pd.Series(dtype=str),
            IDENTITY_KEY: pd.Series(dtype=str),
            "other_key": pd.Series(dtype=str),
            "reason": pd.Series(dtype=str),
            "created_at": pd.Series(dtype="datetime64[ns]"),
        }
    )


class IdentityLedger:
    """The user's decisions about customers, kept apart from the (replaceable) source tables:
    manual merges and splits, consent changes and forgotten customers.

    Each decision is stamped strictly after the one before, to the second: online stores keep a
    row only if it is newer than the one they hold (Redis compares whole seconds), so two
    decisions within a second must still be ordered.
    """

    def __init__(self, directory: Path):
        self.directory = directory

    def _read(self, name: str, empty: pd.DataFrame) -> pd.DataFrame:
        path = self.directory / f"{name}.parquet"
        return pd.read_parquet(path) if path.exists() else empty

    def _write(self, name: str, frame: pd.DataFrame) -> None:
        write_atomically(
            self.directory / f"{name}.parquet",
            lambda path: frame.to_parquet(path, index=False),
        )

    def rules(self) -> pd.DataFrame:
        return self._read("rules", empty_rules())

    def forgotten(self) -> pd.DataFrame:
        return self._read(
            "forgotten",
            pd.DataFrame(
                {
                    CUSTOMER_ID: pd.Series(dtype="int64"),
                    SOURCE_CUSTOMER_ID: pd.Series(dtype="int64"),
                    "forgotten_at": pd.Series(dtype="datetime64[ns]"),
                }
            ),
        )

    def consents(self) -> pd.DataFrame:
        return self._read(
            "consents",
            pd.DataFrame(
                {
                    CUSTOMER_ID: pd.Series(dtype="int64"),
                    "opt_out": pd.Series(dtype=bool),
                    "changed_at": pd.Series(dtype="datetime64[ns]"),
                }
            ),
        )

    def latest_stamp(self) -> pd.Timestamp | None:
        """When the latest decision was made (None before the first)."""
        stamps = [
            self.rules()["created_at"].max(),
            self.forgotten()["forgotten_at"].max(),
            self.consents()["changed_at"].max(),
        ]
        stamps = [s for s in stamps if pd.notna(s)]
        return max(stamps) if stamps else None

    def _next_stamp(self) -> pd.Timestamp:
        now = pd.Timestamp(datetime.now()).floor("s")
        latest = self.latest_stamp()
        return now if latest is None else max(now, latest + pd.Timedelta(seconds=1))

    def next_profile_stamp(self, floor: pd.Timestamp) -> pd.Timestamp:
        """The stamp of the customer rows a decision writes online: at or after `floor` (the
        feature clock) and a second after the previous decision's, kept in this ledger.

        Not the decision's wall time: materialised customer rows carry data time, and a
        decision stamped later than the next materialised days would hide them on Redis.
        """
        path = self.directory / "profile_stamp"
        stamp = pd.Timestamp(floor).floor("s")
        if path.exists():
            stamp = max(stamp, pd.Timestamp(path.read_text()) + pd.Timedelta(seconds=1))
        write_atomically(path, lambda partial: partial.write_text(stamp.isoformat()))
        return stamp

    def add_rule(self, action: str, key: str, other: str = "", reason: str = "") -> None:
        if action not in ("merge", "split"):
            raise ValueError(f"action must be merge or split, not {action!r}")
        if action == "merge" and (not other or other == key):
            raise ValueError("a merge needs two different identity keys")
        row = pd.DataFrame([[action, key, other, reason, self._next_stamp()]], columns=RULE_COLUMNS)
        self._write("rules", pd.concat([self.rules(), row], ignore_index=True))

    def forget(self, customer_id: int, accounts: list[int], keys: list[str]) -> None:
        """Record the customer's accounts as forgotten and erase the rules and consents that
        name them: their identity keys are personal data too."""
        if customer_id in set(self.forgotten()[CUSTOMER_ID]):
            return  # idempotent
        stamp = self._next_stamp()
        rows = pd.DataFrame(
            {CUSTOMER_ID: customer_id, SOURCE_CUSTOMER_ID: accounts, "forgotten_at": stamp}
        )[FORGOTTEN_COLUMNS]
        rules, consents = self.rules(), self.consents()
        self._write(
            "rules", rules[~(rules[IDENTITY_KEY].isin(keys) | rules["other_key"].isin(keys))]
        )
        named = consents[CUSTOMER_ID].isin([customer_id, *accounts])
        self._write("consents", consents[~named])
        # Written last: a customer is forgotten once their trace is gone, and a rerun finishes.
        self._write("forgotten", pd.concat([self.forgotten(), rows], ignore_index=True))

    def set_consent(self, customer_id: int, opt_out: bool) -> None:
        row = pd.DataFrame([[customer_id, opt_out, self._next_stamp()]], columns=CONSENT_COLUMNS)
        self._write("consents", pd.concat([self.consents(), row], ignore_index=True))


def resolution(settings: Settings) -> tuple[pd.DataFrame, str]:
    """The identity map of the stored identities under the ledger's decisions, and a
    fingerprint of the data and those decisions (a training run on them is reusable)."""
    info = load_info(settings.tables_dir)
    identities = load_tables(settings.tables_dir, ["identities"])["identities"]
    ledger = IdentityLedger(settings.identity_dir)
    identity_map = resolve(identities, ledger.rules())
    decided = pd.concat(
        [
            identity_map[[SOURCE_CUSTOMER_ID, CUSTOMER_ID]],
            ledger.forgotten()[[CUSTOMER_ID]].assign(forgotten=True),
            ledger.consents()[[CUSTOMER_ID, "opt_out"]],
        ],
        ignore_index=True,
    )
    digest = pd.util.hash_pandas_object(decided, index=False).sum()
    return identity_map, f"{info.fingerprint}-{int(digest) & 0xFFFFFFFF:08x}"


def resolved_tables(
    settings: Settings, names: list[str]
) -> tuple[dict[str, pd.DataFrame], pd.DataFrame, str]:
    """The stored tables `names` keyed by resolved customers, with `resolution`'s map and
    fingerprint."""
    identity_map, fingerprint = resolution(settings)
    ledger = IdentityLedger(settings.identity_dir)
    tables = load_tables(settings.tables_dir, names) if names else {}
    resolved = apply_resolution(tables, identity_map, ledger.forgotten(), ledger.consents())
    return resolved, identity_map, fingerprint


def write_identity_map(settings: Settings, identity_map: pd.DataFrame) -> None:
    """data/identity/identity_map.parquet: which identity went where and why, for audit."""
    write_atomically(
        settings.identity_dir / "identity_map.parquet",
        lambda path: identity_map.to_parquet(path, index=False),
    )
