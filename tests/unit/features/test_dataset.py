"""Canonical tables on disk: round trip, fingerprint, atomic replacement, and the calendar."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from features.contract import DataContractError
from features.dataset import (
    METADATA_FILE,
    build_calendar,
    fingerprint,
    load_info,
    load_tables,
    save_tables,
)
from features.synthetic import SyntheticConfig, generate

SMALL = SyntheticConfig(n_customers=200, n_stores=3, n_products=40, n_categories=4, days=120)


@pytest.fixture(scope="module")
def tables() -> dict[str, pd.DataFrame]:
    return generate(SMALL)


def _save(tables, directory: Path, name: str = "small"):
    return save_tables(tables, directory, name, "D", "US")


def test_save_then_load_gives_the_same_tables_and_metadata(tables, tmp_path):
    directory = tmp_path / "tables"
    info = _save(tables, directory)

    loaded = load_tables(directory)
    assert set(loaded) == set(tables)
    for name, frame in tables.items():
        pd.testing.assert_frame_equal(loaded[name], frame, obj=name)
    assert load_info(directory) == info
    assert json.loads((directory / METADATA_FILE).read_text())["fingerprint"] == info.fingerprint
    assert info.transactions == len(tables["transactions"])
    assert info.start == str(tables["transactions"]["ts"].min())
    assert info.end == str(tables["transactions"]["ts"].max())
    assert (info.name, info.freq, info.country) == ("small", "D", "US")
    assert fingerprint(loaded) == info.fingerprint


def test_load_tables_reads_only_the_tables_asked_for(tables, tmp_path):
    _save(tables, tmp_path / "tables")
    loaded = load_tables(tmp_path / "tables", ["products", "stores", "no_such_table"])
    assert set(loaded) == {"products", "stores"}


def test_saving_the_same_data_again_is_idempotent(tables, tmp_path):
    directory = tmp_path / "tables"
    first = _save(tables, directory)
    second = _save(generate(SMALL), directory)
    assert second == first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tables"]


def test_fingerprint_changes_with_the_content(tables):
    changed = dict(tables)
    sales = tables["transactions"].copy()
    sales.loc[0, "quantity"] += 1
    changed["transactions"] = sales
    assert fingerprint(changed) != fingerprint(tables)
    assert fingerprint({k: v.copy() for k, v in tables.items()}) == fingerprint(tables)


def test_a_failed_save_keeps_the_previous_dataset_and_leaves_no_staging(
    tables, tmp_path, monkeypatch
):
    directory = tmp_path / "tables"
    before = _save(tables, directory)
    files_before = {p.name: p.read_bytes() for p in directory.iterdir()}

    real_to_parquet = pd.DataFrame.to_parquet
    calls = []

    def fail_on_second(self, *args, **kwargs):
        calls.append(args[0])
        if len(calls) == 2:
            raise OSError("disk full")
        return real_to_parquet(self, *args, **kwargs)

    monkeypatch.setattr(pd.DataFrame, "to_parquet", fail_on_second)
    other = {name: frame.iloc[: len(frame) // 2] for name, frame in tables.items()}
    with pytest.raises(OSError, match="disk full"):
        _save(other, directory, name="other")
    monkeypatch.undo()

    assert len(calls) == 2  # the first table was written to staging, the second failed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tables"]
    assert {p.name: p.read_bytes() for p in directory.iterdir()} == files_before
    assert load_info(directory) == before
    pd.testing.assert_frame_equal(
        load_tables(directory, ["transactions"])["transactions"], tables["transactions"]
    )


def test_a_failed_first_save_leaves_nothing(tables, tmp_path, monkeypatch):
    def fail(self, *args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", fail)
    with pytest.raises(OSError):
        _save(tables, tmp_path / "tables")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(FileNotFoundError, match="no dataset in"):
        load_tables(tmp_path / "tables")


def test_missing_required_table_is_refused_before_writing(tables, tmp_path):
    partial = {name: frame for name, frame in tables.items() if name != "calendar"}
    with pytest.raises(DataContractError, match="table 'calendar' is required"):
        _save(partial, tmp_path / "tables")
    assert not (tmp_path / "tables").exists()


def test_optional_tables_may_be_absent(tables, tmp_path):
    required = ("transactions", "products", "stores", "customers", "calendar")
    info = _save({name: tables[name] for name in required}, tmp_path / "tables")
    assert set(load_tables(tmp_path / "tables")) == set(required)
    assert info.transactions == len(tables["transactions"])


def test_build_calendar_marks_us_holidays():
    calendar = build_calendar(
        pd.Timestamp("2017-07-01 13:45"), pd.Timestamp("2017-07-06 08:00"), "US"
    )
    assert calendar["date"].tolist() == list(pd.date_range("2017-07-01", "2017-07-06"))
    by_day = calendar.set_index("date")
    assert by_day.loc["2017-07-04", "is_holiday"]
    assert by_day.loc["2017-07-04", "holiday_name"] == "Independence Day"
    assert by_day["is_holiday"].sum() == 1
    assert (by_day.drop(pd.Timestamp("2017-07-04"))["holiday_name"] == "").all()


def test_build_calendar_spans_years():
    calendar = build_calendar(pd.Timestamp("2017-12-24"), pd.Timestamp("2018-01-02"), "US")
    holidays = calendar.loc[calendar["is_holiday"], "date"].dt.strftime("%Y-%m-%d").tolist()
    assert holidays == ["2017-12-25", "2018-01-01"]
