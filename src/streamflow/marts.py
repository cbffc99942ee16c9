"""The marts' contract (docs/contracts.md) as data, for the Python side.

dbt enforces it on the tables (`models/marts/marts.yml`); the quality gate,
the tests and the benchmarks read it from here. Types are spelled as
PostgreSQL's ``format_type`` prints them, so a catalog query compares exactly
(``timestamptz`` vs ``timestamp`` matters: a naive timestamp is read in the
session time zone).
"""

from __future__ import annotations

from datetime import date, datetime, timezone

MARTS_SCHEMA = "marts"

# Every mart starts with these, in this order.
KEY_COLUMNS: tuple[tuple[str, str], ...] = (
    ("user_id", "text"),
    ("as_of", "date"),
    ("event_timestamp", "timestamp with time zone"),
    ("loaded_at", "timestamp with time zone"),
)

def as_of_instant(as_of: date) -> datetime:
    """A month's ``event_timestamp``: its as_of at 00:00 UTC, whatever any time zone says."""
    return datetime(as_of.year, as_of.month, as_of.day, tzinfo=timezone.utc)


# mart -> the export file (raw table) it snapshots
SOURCE_EXPORT: dict[str, str] = {
    "user_profile_snapshots": "users",
    "subscriptions_profile_snapshots": "subscriptions",
    "usage_agg_30d_snapshots": "usage_agg_30d",
    "payments_agg_90d_snapshots": "payments_agg_90d",
    "support_agg_90d_snapshots": "support_agg_90d",
    "labels_snapshots": "labels",
}

# mart -> its columns after the key columns, in order, with their types
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
