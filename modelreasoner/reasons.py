"""PHI-free reasons for a job a worker had to fail because one of its steps raised.

``step_failed("claim", exc)`` -> ``"claim failed: value too long for audit.actor"``. The text of
a database error can quote the values it choked on (a result, an observation), so it is never
used: a reason is built from the SQLSTATE, the table named in the statement and, for a value
too long, the column whose parameter exceeds its declared length. Anything else is named by its
exception class only.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy.exc import DBAPIError

from orchestrator.models import Base

SQLSTATE_TEXT = {
    "22001": "value too long",
    "22003": "number out of range",
    "22021": "invalid byte sequence",
    "22P02": "invalid value",
    "22P05": "untranslatable character",
    "23502": "missing required value",
    "23503": "reference to a missing row",
    "23505": "duplicate key",
    "23514": "check constraint violated",
    "25P02": "transaction aborted",
    "42501": "permission denied",
    "42703": "unknown column",
    "42P01": "unknown table",
    "54001": "statement too complex",
}
"""What an SQLSTATE means, in words that cannot carry data."""

_TABLE = re.compile(r"^\s*(?:INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+\"?(\w+)\"?", re.IGNORECASE)
_WITH = re.compile(r"^\s*WITH\b", re.IGNORECASE)
_WRITES = re.compile(r"\b(?:INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+\"?(\w+)\"?", re.IGNORECASE)


def step_failed(step: str, exc: BaseException) -> str:
    """``<step> failed: <what went wrong>``, without any value from the job."""
    return f"{step} failed: {describe(exc)}"


def describe(exc: BaseException) -> str:
    if isinstance(exc, DBAPIError):
        return _database_error(exc)
    return f"{type(exc).__name__}"


def _database_error(exc: DBAPIError) -> str:
    code = getattr(exc.orig, "pgcode", None)
    what = SQLSTATE_TEXT.get(code or "", f"database error {code}" if code else type(exc).__name__)
    table = _table_of(exc.statement or "")
    column = _column_too_long(table, exc.params) if code == "22001" and table in Base.metadata.tables else None
    if column:
        return f"{what} for {table}.{column}"
    return f"{what} in {table}" if table else what


def _table_of(statement: str) -> str | None:
    match = _TABLE.match(statement)
    if match is None and _WITH.match(statement):  # one statement writing several tables (orchestrator.job_sql)
        written = dict.fromkeys(t for t in _WRITES.findall(statement) if t in Base.metadata.tables)
        return " or ".join(written) or None
    return match.group(1) if match and match.group(1) in Base.metadata.tables else None


def _column_too_long(table: str, params: Any) -> str | None:
    """The column whose bound value is longer than the column's declared length."""
    rows = params if isinstance(params, list | tuple) else [params]
    columns = Base.metadata.tables[table].columns
    for row in rows:
        if not isinstance(row, dict):
            continue
        for name, value in row.items():
            column = columns.get(name)
            length = getattr(getattr(column, "type", None), "length", None)
            if isinstance(value, str) and length is not None and len(value) > length:
                return name
    return None
