"""A source checked against the data contract by pandera, and the error its user reads.

The pandera schema of a table is built from the contract's `Column` declarations, so the contract is
declared once: a column's kind becomes a pandera dtype that parses the source's spellings (ids,
mixed timestamp formats, "yes"/"no") and reports the values it cannot read; `required` becomes
a required column with a not-null check; `non_negative` a `ge(0)` check; the table's key a
uniqueness check. A new kind (string ids, say) is one more entry in `KIND_DTYPES` and `_parse`;
an optional column is `required=False` with its `default`.
"""

from __future__ import annotations

import dataclasses
import warnings
from functools import partial
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pandera.pandas as pa
from pandera.engines import pandas_engine
from pandera.errors import ParserError, SchemaError, SchemaErrorReason, SchemaErrors

if TYPE_CHECKING:
    from features.contract import Column, Table

EXAMPLES = 3  # rows quoted in an error message, per problem
FIRST_DATA_ROW = 2  # rows are numbered as in a spreadsheet or a CSV's lines: the header is row 1

# The dtypes a kind may have once parsed; an optional id with gaps is a nullable Int64.
KIND_DTYPES = {
    "id": pd.api.types.is_integer_dtype,
    "int": pd.api.types.is_integer_dtype,
    "float": pd.api.types.is_float_dtype,
    "bool": pd.api.types.is_bool_dtype,
    "timestamp": lambda dtype: dtype == np.dtype("datetime64[ns]"),
    "date": lambda dtype: dtype == np.dtype("datetime64[ns]"),
    "str": lambda dtype: dtype == np.dtype(object) or isinstance(dtype, pd.CategoricalDtype),
}


class DataContractError(ValueError):
    """A source breaks the contract; the message names the source, the column and the rows.

    Args:
        also: further problems of the same source, appended to the message.
    """

    def __init__(
        self,
        source: str,
        message: str,
        column: str | None = None,
        rows: int | None = None,
        also: str = "",
    ):
        self.source, self.column, self.rows = source, column, rows
        where = f"{source}" + (f", column '{column}'" if column else "")
        count = f" ({rows:,} rows)" if rows is not None else ""
        super().__init__(f"{where}: {message}{count}{also}")


def _parse(values: pd.Series, kind: str) -> pd.Series:
    """Cast to the canonical dtype; unparsable values become NaN/NaT (the caller counts them)."""
    if kind in ("id", "int") and pd.api.types.is_integer_dtype(values):
        return values
    if kind == "float" and pd.api.types.is_float_dtype(values):
        return values.astype("float64", copy=False)
    if kind == "timestamp" and values.dtype == "datetime64[ns]":
        return values
    if kind in ("id", "int"):
        numbers = pd.to_numeric(values, errors="coerce")
        fractional = numbers.notna() & (numbers != np.floor(numbers))
        return numbers.mask(fractional)
    if kind == "float":
        return pd.to_numeric(values, errors="coerce").astype("float64")
    if kind in ("timestamp", "date"):
        stamps = pd.to_datetime(values, errors="coerce")
        if getattr(stamps.dt, "tz", None) is not None:
            stamps = stamps.dt.tz_localize(None)
        stamps = stamps.astype("datetime64[ns]")
        retry = stamps.isna() & values.notna()
        if retry.any():  # rows in another format than the first, e.g. a date without its time
            again = pd.to_datetime(values[retry], errors="coerce", format="mixed")
            if again.dtype == "datetime64[ns]":
                stamps[retry] = again
        if kind == "date" and not (stamps.dt.floor("D") == stamps).all():
            stamps = stamps.dt.normalize()
        return stamps
    if kind == "bool":
        if pd.api.types.is_bool_dtype(values):
            return values
        text = values.astype("string").str.strip().str.lower()
        mapped = text.map(
            {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
        )
        return mapped
    if isinstance(values.dtype, pd.CategoricalDtype):
        return values  # large low-cardinality columns (promotion types) stay compact
    return values.astype("string").fillna("").astype(object)


@dataclasses.dataclass(frozen=True)
class ContractDtype(pandas_engine.DataType):
    """A contract kind as a pandera dtype: coercion parses, fills the declared default into empty
    cells and fails, with the unreadable values as failure cases, where parsing found none."""

    kind: str = "str"
    default: object = None

    def __post_init__(self):
        object.__setattr__(self, "type", np.dtype(object))  # pandera reads it; `check` decides

    def _parse_filled(self, raw: pd.Series) -> tuple[pd.Series, pd.Series | None]:
        """The parsed values and where the raw ones could not be read (None: text reads all)."""
        values = _parse(raw, self.kind)
        if self.kind == "str":
            return values, None
        unreadable = values.isna() & raw.notna()
        if self.kind == "bool" and values.dtype == object:
            values = values.astype("boolean")  # a nullable dtype: filling gaps downcasts nothing
        if self.default is not None:
            values = values.fillna(self.default)
        if self.kind in ("id", "int"):
            values = values.astype("Int64" if values.isna().any() else "int64", copy=False)
        elif self.kind == "bool" and not values.isna().any():
            values = values.astype(bool)
        return values, unreadable

    def coerce(self, data_container: pd.Series) -> pd.Series:
        return self._parse_filled(data_container)[0]

    def try_coerce(self, data_container: pd.Series) -> pd.Series:
        values, unreadable = self._parse_filled(data_container)
        if unreadable is not None and unreadable.any():
            # The first few only: pandera sorts and formats every case it is given, which takes
            # 20 s for a 1.5M-row column of dates mapped onto quantities.
            failures = data_container[unreadable].head(EXAMPLES)
            cases = pd.DataFrame({"index": failures.index, "failure_case": failures})
            cases.attrs[UNREADABLE_ROWS] = int(unreadable.sum())  # pandera passes cases on as is
            raise ParserError(f"expected {self.kind} values", failure_cases=cases)
        return values

    def check(self, pandera_dtype, data_container=None) -> bool:
        return bool(KIND_DTYPES[self.kind](getattr(pandera_dtype, "type", None)))

    def __str__(self) -> str:
        return self.kind


NOT_EMPTY = "not_empty"
NOT_NULL = "not_nullable"
UNREADABLE_ROWS = "unreadable_rows"


def _column_schema(column: Column) -> pa.Column:
    return pa.Column(
        ContractDtype(column.kind, column.default),
        checks=_column_checks(column),
        nullable=True,  # gaps are refused by a check of their own, in _column_checks
        required=column.required,
        coerce=True,
        name=column.name,
    )


def _column_checks(column: Column) -> list[pa.Check]:
    """The checks of a column's values. Each reports its first few failures only (see
    ContractDtype.try_coerce); pandera's own `nullable=False` would report every gap."""
    checks = []
    # Text parses empty cells to "", so only a required non-text column can hold gaps.
    if column.required and column.kind != "str":
        checks.append(
            pa.Check(pd.Series.notna, name=NOT_NULL, ignore_na=False, n_failure_cases=EXAMPLES)
        )
    if column.non_negative:
        checks.append(pa.Check.ge(0, n_failure_cases=EXAMPLES))
    return checks


def table_schema(spec: Table) -> pa.DataFrameSchema:
    """The pandera schema of a table, from its contract declarations."""
    return pa.DataFrameSchema(
        {column.name: _column_schema(column) for column in spec.columns},
        checks=pa.Check(lambda frame: len(frame) > 0, name=NOT_EMPTY),
        unique=list(spec.key) or None,
        report_duplicates="exclude_first",
        name=spec.name,
    )


def validate(frame: pd.DataFrame, spec: Table, source: str) -> pd.DataFrame:
    """The contract's columns of `frame`, parsed, with defaults for absent optional columns.

    Raises:
        DataContractError: naming the source, the first column at fault, its problem, the rows
            and a few examples; the other problems pandera found follow on the same line.
    """
    absent = {
        c.name: np.full(len(frame), c.default)
        for c in spec.columns
        if not c.required and c.name not in frame.columns
    }
    # pandera replaces parsed columns in place, which leaves the caller's frame as it was; a
    # shallow copy spares copying 1.5M-row columns that need no parsing.
    candidate = frame.copy(deep=False)
    candidate.index = pd.RangeIndex(len(frame))  # failure cases then name the source's rows
    for name, values in absent.items():
        candidate[name] = values
    try:
        checked = _validate_quietly(table_schema(spec), candidate)
    except SchemaErrors as errors:
        raise _contract_error(errors.schema_errors, spec, frame, source) from None
    if list(checked.columns) == spec.column_names:
        return checked
    return checked[spec.column_names]


Problem = tuple[str | None, str, int | None]  # column, what is wrong (with examples), rows


def _contract_error(
    errors: list[SchemaError], spec: Table, raw: pd.DataFrame, source: str
) -> DataContractError:
    """One error from pandera's: the first problem in contract order leads (its column and row
    count are the error's), the others follow on the same line."""
    (column, message, rows), *others = _problems(errors, spec, raw)
    return DataContractError(source, message, column, rows, _also(others))


def _also(others: list[Problem]) -> str:
    return "".join(
        "; also "
        + (f"column '{column}': " if column else "")
        + text
        + (f" ({rows:,} rows)" if rows is not None else "")
        for column, text, rows in others
    )


def _problems(errors: list[SchemaError], spec: Table, raw: pd.DataFrame) -> list[Problem]:
    """The problems in the order a user should fix them: an empty source, missing columns, then
    column by column in contract order, then duplicate keys."""
    position = {column.name: i for i, column in enumerate(spec.columns)}
    kinds = {column.name: column.kind for column in spec.columns}
    unreadable = {
        e.schema.name for e in errors if e.reason_code == SchemaErrorReason.DATATYPE_COERCION
    }
    missing = [
        e.failure_cases
        for e in errors
        if e.reason_code == SchemaErrorReason.COLUMN_NOT_IN_DATAFRAME
    ]
    ranked: list[tuple[tuple[int, int, int], Problem]] = []
    if missing:
        ranked.append(
            (
                (1, 0, 0),
                (
                    missing[0],
                    f"missing required column(s) {missing} of table '{spec.name}'; "
                    f"found {list(raw.columns)}; map them in the column-mapping file",
                    None,
                ),
            )
        )
    for error in errors:
        check = error.check if isinstance(error.check, str) else error.check.name
        column = error.schema.name if isinstance(error.schema, pa.Column) else None
        cases = error.failure_cases
        if error.reason_code == SchemaErrorReason.COLUMN_NOT_IN_DATAFRAME:
            continue
        if check == NOT_EMPTY:
            ranked.append(
                ((0, 0, 0), (None, f"is empty; table '{spec.name}' needs at least one row", None))
            )
        elif error.reason_code == SchemaErrorReason.DATATYPE_COERCION:
            rows = cases.attrs.get(UNREADABLE_ROWS)  # set by ContractDtype.try_coerce
            says = f"expected {kinds[column]} values, got e.g."
            ranked.append(((2, position[column], 0), _problem(column, says, cases, rows)))
        elif column in unreadable:
            continue  # the column's other checks ran on its raw values: not meaningful
        elif check in CHECK_MESSAGES:
            rows = int((~error.check_output).sum())  # the cases are capped, the output is not
            says, values = CHECK_MESSAGES[check]
            rank = (2, position[column], 1 + list(CHECK_MESSAGES).index(check))
            ranked.append((rank, _problem(column, says, cases, rows, values)))
        elif check == "multiple_fields_uniqueness":
            first = cases[cases["column"] == spec.key[0]]
            says = f"duplicate keys {list(spec.key)}, e.g."
            rows = int(first["index"].nunique())
            ranked.append(((3, 0, 0), _problem(spec.key[0], says, first, rows)))
        else:
            located = isinstance(cases, pd.DataFrame) and "index" in cases
            rows = int(cases["index"].nunique()) if located else None
            ranked.append(((4, 0, 0), _problem(column, f"fails check {check}", cases, rows)))
    ranked.sort(key=lambda problem: problem[0])
    return [problem for _, problem in ranked]


# check -> (what is wrong, whether its failure cases have values worth quoting)
CHECK_MESSAGES = {
    NOT_NULL: ("empty (NaN) values are not allowed, e.g.", False),
    "greater_than_or_equal_to": ("negative values are not allowed, e.g.", True),
}


def _problem(
    column: str | None, says: str, cases: object, rows: int | None, values: bool = True
) -> Problem:
    """`says` followed by the first rows at fault, numbered as in the source file."""
    if not isinstance(cases, pd.DataFrame) or "index" not in cases:
        return column, says.removesuffix(", e.g."), rows  # a check of the whole column
    shown = cases[cases["index"].notna()].sort_values("index").head(EXAMPLES)
    numbers = shown["index"].astype("int64") + FIRST_DATA_ROW
    if values:
        quoted = map(_plain, shown["failure_case"])
        examples = ", ".join(f"{v!r} (row {r})" for v, r in zip(quoted, numbers, strict=True))
    else:
        examples = ("rows " if len(numbers) > 1 else "row ") + ", ".join(map(str, numbers))
    return column, f"{says} {examples}", rows


def _plain(value: object) -> object:
    """numpy scalars as Python values, so the message shows 1.5, not np.float64(1.5)."""
    return value.item() if hasattr(value, "item") else value


def validate_references(
    frame: pd.DataFrame, owners: dict[str, tuple[str, pd.Series]], source: str
) -> None:
    """Every id in `frame`'s reference columns is a key of the table that owns it.

    Args:
        owners: reference column -> (owner table, the owner's keys).

    Raises:
        DataContractError: naming the first column with unknown ids, a few of them and how many
            rows hold one; the other columns at fault follow.
    """
    schema = pa.DataFrameSchema(
        {
            column: pa.Column(
                # A gap is no known id either (ignore_na=False).
                checks=pa.Check(
                    partial(_known, keys=keys),
                    name=owner,
                    ignore_na=False,
                    n_failure_cases=EXAMPLES,  # see ContractDtype.try_coerce
                ),
                nullable=True,
            )
            for column, (owner, keys) in owners.items()
        }
    )
    try:
        _validate_quietly(schema, frame)
    except SchemaErrors as errors:
        (column, message, rows), *others = [
            _unknown_ids(frame[error.schema.name], error) for error in errors.schema_errors
        ]
        raise DataContractError(source, message, column, rows, _also(others)) from None


def validate_unique(frame: pd.DataFrame, columns: list[str], source: str, what: str) -> None:
    """One row per value of `columns`; a repeat is shown as its values joined by ':'.

    Raises:
        DataContractError: "`what` repeat", with the first repeated key and the repeats' count,
            against the last of `columns`.
    """
    schema = pa.DataFrameSchema(unique=columns, report_duplicates="exclude_first")
    try:
        _validate_quietly(schema, frame)
    except SchemaErrors as errors:
        rows = errors.failure_cases["index"].drop_duplicates()
        key = ":".join(str(frame.at[rows.iloc[0], column]) for column in columns)
        raise DataContractError(
            source, f"{what} repeat, e.g. {key}", columns[-1], len(rows)
        ) from None


def _known(ids: pd.Series, keys: pd.Series) -> pd.Series:
    return ids.isin(keys)


def _unknown_ids(ids: pd.Series, error: SchemaError) -> Problem:
    unknown = ids[~error.check_output]
    examples = [_plain(v) for v in unknown.drop_duplicates().head(EXAMPLES)]
    return ids.name, f"unknown ids not in {error.check.name} (e.g. {examples})", len(unknown)


def _validate_quietly(schema: pa.DataFrameSchema, frame: pd.DataFrame) -> pd.DataFrame:
    """Lazy validation in place: parsed columns replace the frame's, the rest is left as it is."""
    with warnings.catch_warnings():
        # pandera gathers failure cases with pd.concat, which warns (FutureWarning) about
        # all-NA cases such as those of empty cells; the user reads our message instead.
        warnings.filterwarnings("ignore", "The behavior of DataFrame concatenation", FutureWarning)
        return schema.validate(frame, lazy=True, inplace=True)
