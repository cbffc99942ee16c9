"""The marts' contract (docs/contracts.md) as data: what the suites check against.

Types are spelled as PostgreSQL's ``format_type`` prints them, so a catalog query
can compare them exactly (``timestamptz`` vs ``timestamp`` matters: Feast
compares a naive timestamp in the session time zone).
"""

from __future__ import annotations

MARTS_SCHEMA = "marts"
QUALITY_SCHEMA = "quality"

# Every mart starts with these, in this order.
KEY_COLUMNS: tuple[tuple[str, str], ...] = (
    ("user_id", "text"),
    ("as_of", "date"),
    ("event_timestamp", "timestamp with time zone"),
    ("loaded_at", "timestamp with time zone"),
)

FEATURE_COLUMNS: dict[str, tuple[tuple[str, str], ...]] = {
    "user_profile_snapshots": (
        ("signup_date", "date"),
        ("user_gender", "text"),
        ("user_is_senior", "boolean"),
        ("has_family", "boolean"),
        ("has_dependents", "boolean"),
    ),
    "subscriptions_profile_snapshots": (
        ("months_active", "integer"),
        ("plan_stream_tv", "boolean"),
        ("plan_stream_movies", "boolean"),
        ("contract_type", "text"),
        ("paperless_billing", "boolean"),
        ("monthly_fee", "numeric(10,2)"),
        ("total_paid", "numeric(12,2)"),
        ("net_service", "text"),
    ),
    "usage_agg_30d_snapshots": (
        ("watch_hours_30d", "double precision"),
        ("avg_session_mins_7d", "double precision"),
        ("unique_devices_30d", "integer"),
        ("skips_7d", "integer"),
        ("rebuffer_events_7d", "integer"),
    ),
    "payments_agg_90d_snapshots": (
        ("failed_payments_90d", "integer"),
    ),
    "support_agg_90d_snapshots": (
        ("support_tickets_90d", "integer"),
        ("ticket_avg_resolution_hrs_90d", "numeric(10,2)"),
    ),
    "labels_snapshots": (
        ("churn_label", "boolean"),
    ),
}

MARTS: tuple[str, ...] = tuple(FEATURE_COLUMNS)

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
