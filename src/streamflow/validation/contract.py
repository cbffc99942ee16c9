"""What the suites check against: the marts' contract (streamflow.marts) and the suite names.

Types are spelled as PostgreSQL's ``format_type`` prints them, so a catalog query
can compare them exactly (``timestamptz`` vs ``timestamp`` matters: Feast
compares a naive timestamp in the session time zone).
"""

from __future__ import annotations

from streamflow.marts import FEATURE_COLUMNS, KEY_COLUMNS, MARTS, MARTS_SCHEMA  # noqa: F401 (re-exported)

QUALITY_SCHEMA = "quality"

# One suite per mart (named after it) plus the cross-mart one; a month is valid only when
# the latest result of every one of these passed.
COVERAGE_SUITE = "month_coverage"
SUITE_NAMES: tuple[str, ...] = (*MARTS, COVERAGE_SUITE)


def columns(mart: str) -> tuple[tuple[str, str], ...]:
    """(name, format_type) of every column of ``mart``, in contract order."""
    return KEY_COLUMNS + FEATURE_COLUMNS[mart]


def create_mart_sql(mart: str) -> str:
    """DDL of one mart exactly per the contract (used where dbt has not built it: tests, dev)."""
    cols = ",\n    ".join(f"{name} {pg_type}" for name, pg_type in columns(mart))
    return (f"create table if not exists {MARTS_SCHEMA}.{mart} (\n    {cols},\n"
            f"    primary key (user_id, as_of)\n)")
