"""One ID: matching, merges and splits, determinism, hashing and the resolved tables."""

import pandas as pd

from features.identity import (
    apply_resolution,
    empty_rules,
    hash_contact,
    identity_features,
    resolve,
    without_forgotten,
)


def _identities(rows: list[tuple]) -> pd.DataFrame:
    """(channel, channel_customer_id, account, phone_hash, email_hash, linked_to)"""
    return pd.DataFrame(
        rows,
        columns=[
            "channel",
            "channel_customer_id",
            "customer_id",
            "phone_hash",
            "email_hash",
            "linked_to",
        ],
    )


IDENTITIES = _identities(
    [
        ("store", "LC1", 1, "p1", "", ""),
        ("web", "w9", 9, "p1", "e9", ""),  # phone matches LC1
        ("app", "a5", 5, "", "e9", ""),  # email matches w9, so also LC1
        ("mini_program", "m7", 7, "", "", "store:LC1"),  # declared link
        ("store", "LC2", 2, "", "", ""),
        ("web", "w3", 3, "", "", ""),
        ("app", "a2", 2, "", "", ""),  # same account as LC2
    ]
)


def _rules(rows: list[tuple]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["action", "identity_key", "other_key", "reason"])
    frame["created_at"] = pd.date_range("2026-01-01", periods=len(rows), freq="D")
    return pd.concat([empty_rules(), frame], ignore_index=True)


def _customers(identity_map: pd.DataFrame) -> dict[str, int]:
    return dict(zip(identity_map["identity_key"], identity_map["customer_id"], strict=True))


def test_shared_keys_links_and_accounts_join_identities_under_the_smallest_account():
    resolved = resolve(IDENTITIES)
    customers = _customers(resolved)
    assert {customers[k] for k in ("store:LC1", "web:w9", "app:a5", "mini_program:m7")} == {1}
    assert customers["store:LC2"] == customers["app:a2"] == 2
    assert customers["web:w3"] == 3
    reasons = dict(zip(resolved["identity_key"], resolved["reason"], strict=True))
    assert reasons["mini_program:m7"] == "link"
    assert reasons["app:a5"] == "email_hash"
    assert reasons["app:a2"] == "account"
    assert reasons["web:w3"] == "own"
    matched = dict(zip(resolved["identity_key"], resolved["matched_with"], strict=True))
    assert matched["mini_program:m7"] == "store:LC1"
    assert matched["web:w3"] == ""


def test_resolution_is_deterministic_whatever_the_row_order():
    first = resolve(IDENTITIES)
    shuffled = resolve(IDENTITIES.sample(frac=1.0, random_state=3))
    pd.testing.assert_frame_equal(first, shuffled)


def test_blank_keys_never_match_each_other():
    resolved = resolve(_identities([("web", "a", 1, "", "", ""), ("app", "b", 2, "", "", "")]))
    assert sorted(resolved["customer_id"]) == [1, 2]
    assert resolved["customer_id"].nunique() == 2


def test_manual_merge_joins_and_a_later_split_undoes_it():
    merged = _customers(resolve(IDENTITIES, _rules([("merge", "web:w3", "store:LC2", "call")])))
    assert merged["web:w3"] == merged["store:LC2"] == 2
    split = resolve(
        IDENTITIES,
        _rules([("merge", "web:w3", "store:LC2", "call"), ("split", "web:w3", "", "wrong")]),
    )
    assert _customers(split)["web:w3"] == 3
    assert split.set_index("identity_key").loc["web:w3", "detached"]


def test_split_detaches_from_automatic_matches_and_a_later_merge_wins_again():
    split = _customers(resolve(IDENTITIES, _rules([("split", "web:w9", "", "shared phone")])))
    assert split["web:w9"] == 9
    # Its email no longer carries a5 to LC1 either: a5 now stands alone.
    assert split["app:a5"] == 5
    assert split["store:LC1"] == split["mini_program:m7"] == 1
    remerged = _customers(
        resolve(
            IDENTITIES,
            _rules([("split", "web:w9", "", "x"), ("merge", "web:w9", "store:LC1", "checked")]),
        )
    )
    assert remerged["web:w9"] == 1


def test_rules_naming_identities_the_source_dropped_are_left_out():
    rules = _rules([("merge", "web:gone", "web:w3", ""), ("merge", "web:w3", "store:LC2", "")])
    customers = _customers(resolve(IDENTITIES, rules))
    assert customers["web:w3"] == 2
    assert "web:gone" not in customers


def test_contacts_are_normalised_salted_and_blank_stays_blank():
    phones = hash_contact(pd.Series(["+1 (555) 010-0000", "15550100000", "", None]), "s", "phone")
    assert phones[0] == phones[1] and len(phones[0]) == 32
    assert phones[2] == "" and phones[3] == ""
    assert "555" not in phones[0]
    emails = hash_contact(pd.Series([" Ann@Example.com", "ann@example.com"]), "s", "email")
    assert emails[0] == emails[1]
    other_salt = hash_contact(pd.Series(["ann@example.com"]), "t", "email")
    assert other_salt[0] != emails[0]


def test_apply_resolution_rekeys_sales_and_collapses_customers():
    identity_map = resolve(IDENTITIES)
    tables = {
        "transactions": pd.DataFrame({"customer_id": [1, 9, 5, 7, 2, 3], "order_id": range(6)}),
        "customers": pd.DataFrame(
            {
                "customer_id": [1, 9, 5, 7, 2, 3],
                "home_store_id": [10, 90, 50, 70, 20, 30],
                "opt_out": [False, True, False, False, False, False],
            }
        ),
    }
    resolved = apply_resolution(tables, identity_map)
    assert resolved["transactions"]["customer_id"].tolist() == [1, 1, 1, 1, 2, 3]
    customers = resolved["customers"].set_index("customer_id")
    assert customers.index.tolist() == [1, 2, 3]
    assert customers.loc[1, "home_store_id"] == 10  # the surviving account's own row
    assert customers.loc[1, "opt_out"]  # any identity's opt-out opts the customer out
    consents = pd.DataFrame(
        {
            "customer_id": [1, 1],
            "opt_out": [False, True],
            "changed_at": pd.date_range("2026", periods=2),
        }
    )
    forgotten = pd.DataFrame({"customer_id": [3], "forgotten_at": [pd.Timestamp("2026-01-05")]})
    again = apply_resolution(tables, identity_map, forgotten, consents)
    assert 3 not in set(again["transactions"]["customer_id"])
    assert again["customers"].set_index("customer_id").loc[1, "opt_out"]


def test_without_forgotten_drops_every_account_of_the_customer():
    tables = {
        "identities": IDENTITIES,
        "transactions": pd.DataFrame({"customer_id": [1, 9, 5, 7, 2], "order_id": range(5)}),
    }
    forgotten = pd.DataFrame(
        {
            "customer_id": [1, 1, 1, 1],
            "source_customer_id": [1, 9, 5, 7],
            "forgotten_at": pd.Timestamp("2026-01-05"),
        }
    )
    kept = without_forgotten(tables, forgotten)
    assert kept["transactions"]["customer_id"].tolist() == [2]
    assert set(kept["identities"]["channel_customer_id"]) == {"LC2", "w3", "a2"}


def test_identity_rows_keep_their_stamp_unless_they_moved():
    first = identity_features(resolve(IDENTITIES), None, pd.Timestamp("2026-01-01"))
    rules = _rules([("merge", "web:w3", "store:LC2", "call")])
    second = identity_features(resolve(IDENTITIES, rules), first, pd.Timestamp("2026-02-01"))
    moved = second.loc[second["event_timestamp"] == pd.Timestamp("2026-02-01"), "identity_key"]
    assert moved.tolist() == ["web:w3"]


def test_an_opt_out_survives_a_later_merge_and_a_later_opt_in_wins():
    tables = {
        "customers": pd.DataFrame(
            {"customer_id": [2, 3], "home_store_id": [20, 30], "opt_out": [False, False]}
        )
    }
    merged = resolve(IDENTITIES, _rules([("merge", "web:w3", "store:LC2", "call")]))
    consents = pd.DataFrame(
        {"customer_id": [3], "opt_out": [True], "changed_at": [pd.Timestamp("2025-12-01")]}
    )
    customers = apply_resolution(tables, merged, None, consents)["customers"]
    assert customers.set_index("customer_id").loc[2, "opt_out"]  # 3 opted out, now part of 2
    later = pd.concat(
        [
            consents,
            pd.DataFrame(
                {"customer_id": [2], "opt_out": [False], "changed_at": [pd.Timestamp("2026-02")]}
            ),
        ]
    )
    customers = apply_resolution(tables, merged, None, later)["customers"]
    assert not customers.set_index("customer_id").loc[2, "opt_out"]


def test_forgetting_blanks_links_that_name_the_removed_identities():
    forgotten = pd.DataFrame(
        {"customer_id": [1], "source_customer_id": [1], "forgotten_at": pd.Timestamp("2026")}
    )
    kept = without_forgotten({"identities": IDENTITIES}, forgotten)["identities"]
    assert "LC1" not in set(kept["channel_customer_id"])
    assert not kept["linked_to"].str.contains("LC1").any()


def test_identities_the_source_dropped_stop_resolving_once():
    first = identity_features(resolve(IDENTITIES), None, pd.Timestamp("2026-01-01"))
    fewer = IDENTITIES[IDENTITIES["channel_customer_id"] != "w3"]
    second = identity_features(resolve(fewer), first, pd.Timestamp("2026-02-01"))
    gone = second[second["identity_key"] == "web:w3"].iloc[0]
    assert pd.isna(gone["customer_id"]) and gone["reason"] == "removed"
    assert gone["event_timestamp"] == pd.Timestamp("2026-02-01")
    third = identity_features(resolve(fewer), second, pd.Timestamp("2026-03-01"))
    assert (third["event_timestamp"] <= pd.Timestamp("2026-02-01")).all()  # nothing moved
