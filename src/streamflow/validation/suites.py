"""The expectation suites, defined in code (the JSON under expectations/gx/expectations is generated).

One suite per mart, validated one ``as_of`` at a time, plus ``month_coverage``:
a one-row-per-month batch of row and user counts across the marts. It exists
because GX cannot form a batch for a month a mart has no rows for, and because
"every mart has the same users" is a fact about several tables, not one.

Severity ``critical`` blocks the month; ``warning`` is reported only.
"""

from __future__ import annotations

import great_expectations as gx
import great_expectations.expectations as gxe

from streamflow.validation.contract import COVERAGE_SUITE, FEATURE_COLUMNS, KEY_COLUMNS, MARTS, columns

ROSTER_MART = "user_profile_snapshots"  # users.csv is each month's roster
WARNING = "warning"

# How GX 1.x renders a PostgreSQL column type (compared case-insensitively as a string,
# so precision and time zone are checked too).
GX_TYPES = {
    "text": "TEXT",
    "date": "DATE",
    "timestamp with time zone": "TIMESTAMP WITH TIME ZONE",
    "boolean": "BOOLEAN",
    "integer": "INTEGER",
    "double precision": "DOUBLE PRECISION",
    "numeric(10,2)": "NUMERIC(10, 2)",
    "numeric(12,2)": "NUMERIC(12, 2)",
}

# Month-over-month drift band on these means (expectation parameters filled in per run from
# the previous month; a first month has no band). Warning level: a shift is worth a look,
# not proof of bad data.
MEAN_BANDS: dict[str, tuple[str, ...]] = {
    "usage_agg_30d_snapshots": ("watch_hours_30d",),
    "subscriptions_profile_snapshots": ("monthly_fee",),
}
MEAN_BAND_RELATIVE = 0.15

ACCEPTED_VALUES = {
    "contract_type": ["Month-to-month", "One year", "Two year"],
    "net_service": ["DSL", "Fiber optic", "No"],
}

# Physically bounded or at least non-negative. Upper bounds only where a period bounds them.
# The low bound is inclusive, except for the columns in STRICT_LOW (a fee of 0 is no fee).
STRICT_LOW = {"monthly_fee"}
RANGES: dict[str, tuple[float | None, float | None]] = {
    "months_active": (0, 1200),
    "monthly_fee": (0, 1000),
    "total_paid": (0, None),
    "watch_hours_30d": (0, 30 * 24),
    "avg_session_mins_7d": (0, 7 * 24 * 60),
    "unique_devices_30d": (0, None),
    "skips_7d": (0, None),
    "rebuffer_events_7d": (0, None),
    "failed_payments_90d": (0, None),
    "support_tickets_90d": (0, None),
    "ticket_avg_resolution_hrs_90d": (0, None),
}

# Features a NULL in which blocks the month; NULLs elsewhere are reported as warnings
# (plan_stream_* are NULL by design when there is no net service).
BLOCKING_NOT_NULL = {"contract_type", "net_service", "churn_label"}
NULL_BY_DESIGN = {"plan_stream_tv", "plan_stream_movies"}


def mean_parameter(column: str, bound: str) -> str:
    return f"{column}_mean_{bound}"


def _mart_suite(mart: str) -> gx.ExpectationSuite:
    # Built as a list and handed to the suite at once: ExpectationSuite.add_expectation
    # writes through to the store on every call once a suite of that name exists.
    expectations: list = []
    add = expectations.append
    cols = columns(mart)

    # Shape: the contract's columns, in order, with the contract's types.
    add(gxe.ExpectTableColumnsToMatchOrderedList(column_list=[c for c, _ in cols]))
    for name, pg_type in cols:
        add(gxe.ExpectColumnValuesToBeOfType(column=name, type_=GX_TYPES[pg_type]))

    # Per-row expectations all pass on an empty batch, so emptiness must fail on its own.
    add(gxe.ExpectTableRowCountToBeBetween(min_value=1))

    # Keys.
    for name, _ in KEY_COLUMNS:
        add(gxe.ExpectColumnValuesToNotBeNull(column=name))
    # (user_id, as_of) is unique: a batch is one as_of, so user_id unique within it says exactly
    # that. (ExpectCompoundColumnsToBeUnique is a self-join GX plans badly: 80 s on 7k
    # unanalysed rows, against 1 s for this.)
    add(gxe.ExpectColumnValuesToBeUnique(column="user_id", description="(user_id, as_of) is unique"))
    add(gxe.UnexpectedRowsExpectation(
        description="event_timestamp is as_of at 00:00 UTC (Feast's point-in-time key)",
        unexpected_rows_query=(
            "select user_id, as_of, event_timestamp from {batch} "
            "where event_timestamp is distinct from (as_of::timestamp at time zone 'UTC')"),
    ))
    add(gxe.ExpectColumnUniqueValueCountToBeBetween(
        column="loaded_at", min_value=1, max_value=1, severity=WARNING,
        description="one load time per month"))

    features = [c for c, _ in FEATURE_COLUMNS[mart]]
    for col in features:
        if col in BLOCKING_NOT_NULL:
            add(gxe.ExpectColumnValuesToNotBeNull(column=col))
        elif col not in NULL_BY_DESIGN:
            add(gxe.ExpectColumnValuesToNotBeNull(column=col, severity=WARNING))
        if col in ACCEPTED_VALUES:
            add(gxe.ExpectColumnValuesToBeInSet(column=col, value_set=ACCEPTED_VALUES[col]))
        if col in RANGES:
            low, high = RANGES[col]
            add(gxe.ExpectColumnValuesToBeBetween(column=col, min_value=low, max_value=high,
                                                  strict_min=col in STRICT_LOW))
        # A column with one value carries no signal (the real avg_session_mins_7d is constant).
        add(gxe.ExpectColumnUniqueValueCountToBeBetween(
            column=col, min_value=2, severity=WARNING, description="not a constant column"))

    for col in MEAN_BANDS.get(mart, ()):
        add(gxe.ExpectColumnMeanToBeBetween(
            column=col, severity=WARNING,
            min_value={"$PARAMETER": mean_parameter(col, "min")},
            max_value={"$PARAMETER": mean_parameter(col, "max")},
            description=f"mean within {MEAN_BAND_RELATIVE:.0%} of the previous month's"))

    if mart == ROSTER_MART:
        add(gxe.ExpectColumnPairValuesAToBeGreaterThanB(
            column_A="as_of", column_B="signup_date", or_equal=True,
            ignore_row_if="either_value_is_missing", description="nobody signs up after as_of"))
    if mart == "subscriptions_profile_snapshots":
        add(gxe.UnexpectedRowsExpectation(
            description="plan_stream_* are NULL exactly when net_service = 'No'",
            unexpected_rows_query=(
                "select user_id, net_service, plan_stream_tv, plan_stream_movies from {batch} "
                "where (plan_stream_tv is null) <> (net_service = 'No') "
                "or (plan_stream_movies is null) <> (net_service = 'No')"),
        ))
    if mart == "labels_snapshots":
        add(gxe.ExpectColumnDistinctValuesToEqualSet(
            column="churn_label", value_set=[False, True], description="both classes present"))
    return gx.ExpectationSuite(name=mart, expectations=expectations)


def _coverage_suite() -> gx.ExpectationSuite:
    expectations: list = [gxe.ExpectTableRowCountToEqual(value=1)]
    for mart in MARTS:
        expectations.append(gxe.ExpectColumnValuesToBeBetween(
            column=f"{mart}_rows", min_value=1, description=f"{mart} has rows for the month"))
    for mart in MARTS:
        if mart != ROSTER_MART:
            expectations.append(gxe.ExpectColumnPairValuesToBeEqual(
                column_A=f"{mart}_users", column_B=f"{ROSTER_MART}_users",
                description=f"{mart} has as many users as the roster"))
    return gx.ExpectationSuite(name=COVERAGE_SUITE, expectations=expectations)


def build_suites() -> list[gx.ExpectationSuite]:
    return [_mart_suite(m) for m in MARTS] + [_coverage_suite()]

